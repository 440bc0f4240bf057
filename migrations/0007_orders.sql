-- Orders: PENDING until paid, then PAID or FAILED. Amounts in won.
CREATE TABLE orders (
    id              BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id         BIGINT      NOT NULL,
    status          VARCHAR(16) NOT NULL,
    total_amount    BIGINT      NOT NULL,
    discount_amount BIGINT      NOT NULL,
    final_amount    BIGINT      NOT NULL,
    coupon_id       BIGINT      NULL,
    created_at      DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    paid_at         DATETIME(6) NULL,
    CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    KEY orders_by_user (user_id, id),
    KEY orders_paid_by_time (status, paid_at)
) ENGINE = InnoDB;
