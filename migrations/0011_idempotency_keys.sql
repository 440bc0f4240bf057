-- Responses of charges made with an Idempotency-Key, so a retry returns the first response.
CREATE TABLE idempotency_keys (
    user_id    BIGINT       NOT NULL,
    idem_key   VARCHAR(128) NOT NULL,
    amount     BIGINT       NOT NULL,
    response   JSON         NOT NULL,
    created_at DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (user_id, idem_key)
) ENGINE = InnoDB;
