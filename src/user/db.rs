//! SQL of the `users` table.

use sqlx::{MySqlPool, QueryBuilder};

use super::UserName;
use crate::id::UserId;

pub async fn insert(db: &MySqlPool, name: &UserName) -> Result<UserId, sqlx::Error> {
    let done = sqlx::query("INSERT INTO users (name) VALUES (?)").bind(name.as_str()).execute(db).await?;
    Ok(UserId::new(done.last_insert_id() as i64).expect("AUTO_INCREMENT ids are positive"))
}

pub async fn exists(db: &MySqlPool, id: UserId) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = ?").bind(id).fetch_optional(db).await?;
    Ok(found.is_some())
}

/// Inserts many users in one statement and returns their ids. A multi-row INSERT gets consecutive
/// AUTO_INCREMENT values (InnoDB's "simple insert"), starting at LAST_INSERT_ID().
pub async fn insert_batch(db: &MySqlPool, names: &[String]) -> Result<Vec<UserId>, sqlx::Error> {
    let mut query = QueryBuilder::new("INSERT INTO users (name) ");
    query.push_values(names, |mut row, name| {
        row.push_bind(name);
    });
    let done = query.build().execute(db).await?;
    let first = done.last_insert_id() as i64;
    Ok((first..first + names.len() as i64).filter_map(UserId::new).collect())
}
