-- Every balance change: CHARGE (+), PAYMENT (-), REFUND (+), with the balance right after it.
CREATE TABLE balance_history (
    id            BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id       BIGINT      NOT NULL,
    type          VARCHAR(16) NOT NULL,
    amount        BIGINT      NOT NULL,
    balance_after BIGINT      NOT NULL,
    order_id      BIGINT      NULL,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY balance_history_user_newest (user_id, id)
) ENGINE = InnoDB;
