//! A plain HTTP client of stampede's API for set-up and verification, outside goose's metrics:
//! nothing here shows up in the report.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Any set-up or verification failure, as a message saying which call failed and why.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Generous: set-up runs while the server is idle, verification after the load stopped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The API of one stampede server.
#[derive(Clone)]
pub struct Api {
    client: Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    admin_token: String,
    /// Signs the tokens of the users set-up and verification act for.
    jwt_secret: String,
}

/// A product as the API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Product {
    pub id: i64,
    pub options: Vec<ProductOption>,
}

/// One option of a product.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ProductOption {
    pub id: i64,
    pub price: i64,
    pub stock: i64,
}

/// `GET /api/v1/admin/coupons/{id}`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CouponStatus {
    pub total_quantity: i64,
    pub issued: i64,
    pub remaining: i64,
    pub persisted: i64,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

#[derive(Deserialize)]
struct HeldCoupons {
    coupons: Vec<HeldCoupon>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeldCoupon {
    coupon_id: i64,
}

impl Api {
    pub fn new(base: &str, admin_token: &str, jwt_secret: &str) -> Result<Self, Error> {
        let client = Client::builder().timeout(REQUEST_TIMEOUT).build()?;
        let base = base.trim_end_matches('/').to_string();
        Ok(Self { client, base, admin_token: admin_token.to_string(), jwt_secret: jwt_secret.to_string() })
    }

    pub async fn create_user(&self, name: &str) -> Result<i64, Error> {
        let created: Created =
            self.call(self.admin(Method::POST, "/users").json(&json!({ "name": name })), 201).await?;
        Ok(created.id)
    }

    /// A product sold in options of `(name, stock)`, all at `price`.
    pub async fn create_product(&self, name: &str, price: i64, options: &[(String, u64)]) -> Result<Product, Error> {
        let options: Vec<Value> = options.iter().map(|(name, stock)| json!({ "name": name, "stock": stock })).collect();
        let body = json!({ "name": name, "price": price, "options": options });
        self.call(self.admin(Method::POST, "/products").json(&body), 201).await
    }

    /// A FIXED coupon of `discount` won, issuable from now on with no end.
    pub async fn create_coupon(&self, name: &str, discount: i64, quantity: u64) -> Result<i64, Error> {
        let body =
            json!({ "name": name, "discountType": "FIXED", "discountValue": discount, "totalQuantity": quantity });
        let created: Created = self.call(self.admin(Method::POST, "/coupons").json(&body), 201).await?;
        Ok(created.id)
    }

    pub async fn coupon_status(&self, coupon_id: i64) -> Result<CouponStatus, Error> {
        self.call(self.admin(Method::GET, &format!("/coupons/{coupon_id}")), 200).await
    }

    /// Issues `coupon_id` to `user_id` through the public endpoint; anything but 201 is an error.
    pub async fn issue(&self, coupon_id: i64, user_id: i64) -> Result<(), Error> {
        let request = self
            .client
            .post(format!("{}/api/v1/coupons/{coupon_id}/issue", self.base))
            .bearer_auth(crate::token::mint(&self.jwt_secret, user_id))
            .json(&json!({ "userId": user_id }));
        let _: Value = self.call(request, 201).await?;
        Ok(())
    }

    /// How many times `coupon_id` appears among the coupons `user_id` holds.
    pub async fn held_count(&self, user_id: i64, coupon_id: i64) -> Result<usize, Error> {
        let request = self
            .client
            .get(format!("{}/api/v1/users/{user_id}/coupons", self.base))
            .bearer_auth(crate::token::mint(&self.jwt_secret, user_id));
        let held: HeldCoupons = self.call(request, 200).await?;
        Ok(held.coupons.iter().filter(|held| held.coupon_id == coupon_id).count())
    }

    pub async fn product(&self, product_id: i64) -> Result<Product, Error> {
        self.call(self.client.get(format!("{}/api/v1/products/{product_id}", self.base)), 200).await
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}/api/v1/admin{path}", self.base)).bearer_auth(&self.admin_token)
    }

    /// Sends `request`, expects status `expected`, decodes the body; an error names the call and quotes the body.
    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder, expected: u16) -> Result<T, Error> {
        let request = request.build()?;
        let what = format!("{} {}", request.method(), request.url().path());
        let response = self.client.execute(request).await.map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("{what}: reading the body: {e}"))?;
        if status != StatusCode::from_u16(expected)? {
            return Err(format!("{what}: expected {expected}, got {status}: {body}").into());
        }
        Ok(serde_json::from_str(&body).map_err(|e| format!("{what}: unexpected body ({e}): {body}"))?)
    }
}
