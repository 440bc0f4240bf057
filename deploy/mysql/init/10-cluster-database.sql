-- The database of the compose `cluster` profile's service (docker-compose.yml): the single-Redis service keeps
-- `stampede`, since two Redis states over one database would each decide the same coupons. Run by the MySQL
-- image on the first start of an empty volume only.
CREATE DATABASE IF NOT EXISTS stampede_cluster CHARACTER SET utf8mb4;
GRANT ALL PRIVILEGES ON stampede_cluster.* TO 'stampede'@'%';
