-- Order events written in the pay transaction and relayed after commit: to the data platform (delivered_at)
-- and to the Redis daily sales sets (sales_applied_at). event_id is stable across retries.
CREATE TABLE outbox (
    id               BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event_id         CHAR(36)    NOT NULL,
    order_id         BIGINT      NOT NULL,
    payload          JSON        NOT NULL,
    created_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    attempts         INT         NOT NULL DEFAULT 0,
    next_attempt_at  DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    last_error       VARCHAR(500) NULL,
    delivered_at     DATETIME(6) NULL,
    sales_applied_at DATETIME(6) NULL,
    UNIQUE KEY outbox_event (event_id),
    KEY outbox_due (delivered_at, next_attempt_at)
) ENGINE = InnoDB;
