-- One payment per paid order; the unique key makes paying twice impossible at the storage level too.
CREATE TABLE payments (
    id       BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    order_id BIGINT      NOT NULL,
    user_id  BIGINT      NOT NULL,
    amount   BIGINT      NOT NULL,
    paid_at  DATETIME(6) NOT NULL,
    UNIQUE KEY payments_one_per_order (order_id)
) ENGINE = InnoDB;
