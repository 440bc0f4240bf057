//! Id newtypes: positive 64-bit integers that fit MySQL's signed BIGINT. Parsing one (from a path segment
//! or a JSON number) is the validation, so a zero, negative, too large or non-numeric id never reaches a
//! domain function.

use serde::{Deserialize, Deserializer, Serialize};

macro_rules! ids {
    ($($name:ident => $what:literal),* $(,)?) => {$(
        #[doc = concat!("Id of a ", $what, ": 1..=i64::MAX.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(i64);

        /// An integer of at least 1 in the OpenAPI, as the deserializer below accepts (the derive cannot
        /// put a minimum on a newtype).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
                    .minimum(Some(1))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            /// Wraps a value read back from the database, where it is positive by construction.
            pub fn new(value: i64) -> Option<Self> {
                (value > 0).then_some(Self(value))
            }

            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                crate::whole::i64(deserializer)
                    .ok()
                    .and_then(Self::new)
                    .ok_or_else(|| serde::de::Error::custom(concat!($what, " id must be 1..=9223372036854775807")))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl sqlx::Type<sqlx::MySql> for $name {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <i64 as sqlx::Type<sqlx::MySql>>::type_info()
            }
            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <i64 as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::MySql> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut Vec<u8>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <i64 as sqlx::Encode<sqlx::MySql>>::encode_by_ref(&self.0, buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::MySql> for $name {
            fn decode(value: sqlx::mysql::MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let raw = <i64 as sqlx::Decode<sqlx::MySql>>::decode(value)?;
                Self::new(raw).ok_or_else(|| format!("non-positive {} id {raw}", $what).into())
            }
        }
    )*};
}

ids! {
    UserId => "user",
    ProductId => "product",
    CouponId => "coupon",
    OrderId => "order",
    OptionId => "product option",
}
