-- Units of each option sold in PAID orders, all time. The pay transaction adds an item's quantity in the same
-- guarded UPDATE that takes its stock, so the count is exact under any concurrency and costs no lock or row
-- write of its own. A product's soldCount is the sum over its options, like its stock.
ALTER TABLE product_options ADD COLUMN sold BIGINT NOT NULL DEFAULT 0;
