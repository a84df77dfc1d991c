-- The example shop's PostgreSQL databases (run once, when the postgres volume is created).
CREATE DATABASE shop_shared;
CREATE DATABASE shop_big_corp;
