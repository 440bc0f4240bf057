-- The retention job pages through ended campaigns whose Redis state is still there; without this index each
-- page would scan the whole table.
CREATE INDEX coupons_by_end_unpruned ON coupons (redis_pruned_at, ends_at, id);
