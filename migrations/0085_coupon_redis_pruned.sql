-- redis_pruned_at: when the retention job deleted the campaign's Redis state (meta, stock, issued, queue),
-- once it had ended and every issuance was persisted (docs/coupons.md, "Pruning ended campaigns"). A pruned
-- coupon is never rebuilt: the start-up check and the fence skip it, and it answers from its dates.
ALTER TABLE coupons ADD COLUMN redis_pruned_at DATETIME(6) NULL;
