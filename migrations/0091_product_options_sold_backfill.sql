-- The units of the orders paid before `product_options.sold` existed (0090). Its own migration: MySQL commits
-- the ALTER on its own, so a failed backfill reruns without the ALTER failing on the column it already added.
UPDATE product_options o
JOIN (SELECT i.option_id, SUM(i.quantity) AS units
      FROM order_items i JOIN orders ord ON ord.id = i.order_id
      WHERE ord.status = 'PAID'
      GROUP BY i.option_id) paid ON paid.option_id = o.id
SET o.sold = paid.units;
