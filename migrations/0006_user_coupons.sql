-- Issued coupons, written by the background writer with INSERT IGNORE. The unique key makes a replayed
-- queue entry a no-op. No foreign keys on purpose: INSERT IGNORE would turn a failing one into a silently
-- dropped row, and issuance already checked the user and coupon.
CREATE TABLE user_coupons (
    coupon_id BIGINT      NOT NULL,
    user_id   BIGINT      NOT NULL,
    status    VARCHAR(16) NOT NULL DEFAULT 'AVAILABLE',
    issued_at DATETIME(6) NOT NULL,
    used_at   DATETIME(6) NULL,
    order_id  BIGINT      NULL,
    PRIMARY KEY (coupon_id, user_id),
    KEY user_coupons_by_user (user_id, coupon_id)
) ENGINE = InnoDB;
