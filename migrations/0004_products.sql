-- The catalogue. Price in won; status is SOLD_OUT exactly when stock is 0.
CREATE TABLE products (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name       VARCHAR(200) NOT NULL,
    price      BIGINT       NOT NULL,
    stock      INT          NOT NULL,
    status     VARCHAR(16)  NOT NULL,
    view_count BIGINT       NOT NULL DEFAULT 0,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT products_price_not_negative CHECK (price >= 0),
    CONSTRAINT products_stock_not_negative CHECK (stock >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
