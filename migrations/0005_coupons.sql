-- Coupon campaigns. FIXED: discount_value won off; RATE: percent off (1..100). ends_at NULL: no end.
CREATE TABLE coupons (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           VARCHAR(200) NOT NULL,
    discount_type  VARCHAR(8)   NOT NULL,
    discount_value BIGINT       NOT NULL,
    total_quantity INT          NOT NULL,
    starts_at      DATETIME(6)  NOT NULL,
    ends_at        DATETIME(6)  NULL,
    created_at     DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
