-- Product options (size, colour, ...): each has its own price and stock, and is what an order line buys.
-- A product's stock and status are computed from its options when read (stock = sum, SOLD_OUT at 0), so the
-- pay transaction locks only the option rows it takes units from. Option names compare byte for byte.
-- status: SOLD_OUT exactly when stock is 0, kept by the guarded UPDATEs of pay and restock, for operators'
-- queries (the service derives it from stock).
CREATE TABLE product_options (
    id         BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT       NOT NULL,
    name       VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    price      BIGINT       NOT NULL,
    stock      INT          NOT NULL,
    status     VARCHAR(16)  NOT NULL,
    UNIQUE KEY product_options_name (product_id, name),
    CONSTRAINT product_options_product_fk FOREIGN KEY (product_id) REFERENCES products (id),
    CONSTRAINT product_options_price_not_negative CHECK (price >= 0),
    CONSTRAINT product_options_stock_not_negative CHECK (stock >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

-- Every existing product is sold in one option named `default` that carries its stock.
INSERT INTO product_options (product_id, name, price, stock, status)
SELECT id, 'default', price, stock, status FROM products ORDER BY id;

ALTER TABLE products
    DROP CONSTRAINT products_stock_not_negative,
    DROP COLUMN stock,
    DROP COLUMN status;

-- An order line buys one option of a product; its name is kept as it was when the order was created.
ALTER TABLE order_items
    ADD COLUMN option_id   BIGINT       NULL AFTER product_id,
    ADD COLUMN option_name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL AFTER option_id;

UPDATE order_items i JOIN product_options o ON o.product_id = i.product_id
SET i.option_id = o.id, i.option_name = o.name;

ALTER TABLE order_items
    MODIFY option_id   BIGINT       NOT NULL,
    MODIFY option_name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    DROP PRIMARY KEY,
    ADD PRIMARY KEY (order_id, product_id, option_id);
