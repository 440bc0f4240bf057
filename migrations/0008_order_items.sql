-- Lines of an order, one per distinct product, priced when the order was created.
CREATE TABLE order_items (
    order_id   BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    quantity   INT    NOT NULL,
    unit_price BIGINT NOT NULL,
    amount     BIGINT NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY order_items_by_product (product_id),
    CONSTRAINT order_items_order_fk FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) ENGINE = InnoDB;
