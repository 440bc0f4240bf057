-- One row per user who ever charged; absent means balance 0. Won, never negative.
CREATE TABLE balances (
    user_id    BIGINT      NOT NULL PRIMARY KEY,
    amount     BIGINT      NOT NULL DEFAULT 0,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    CONSTRAINT balances_user_fk FOREIGN KEY (user_id) REFERENCES users (id),
    CONSTRAINT balances_amount_not_negative CHECK (amount >= 0)
) ENGINE = InnoDB;
