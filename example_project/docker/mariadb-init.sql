-- The example shop's MariaDB database (run once, when the mariadb volume is created).
CREATE DATABASE IF NOT EXISTS shop_enterprise_x CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
