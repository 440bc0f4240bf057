-- Batches of view counts already added to products.view_count. The flusher inserts a batch's id in the
-- same transaction as its UPDATEs, so a batch retried after a crash (MySQL committed, Redis not yet told)
-- is recognised and not counted twice. Old rows are pruned by the flusher.
CREATE TABLE product_view_flushes (
    batch_id   CHAR(36)    NOT NULL PRIMARY KEY,
    flushed_at DATETIME(6) NOT NULL,
    KEY product_view_flushes_by_time (flushed_at)
) ENGINE = InnoDB;
