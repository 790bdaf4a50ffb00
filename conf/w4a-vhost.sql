-- The table the hosting panel writes, read by mod_w4a_vhost's SQL source
-- (docs/mod_w4a_vhost.md, "The SQL source"). One row per name: a domain,
-- an alias, or a wildcard written "*.example.org". The columns are those of
-- a text map line (docs/w4a-vhostmap.md) and get the same checks.
--
-- MariaDB/MySQL:  mariadb w4a < conf/w4a-vhost.sql
-- SQLite:         sqlite3 /etc/w4a/hostings.sqlite < conf/w4a-vhost.sql
CREATE TABLE w4a_domains (
    name     VARCHAR(255)  NOT NULL PRIMARY KEY, -- what a Host is looked up as
    domain   VARCHAR(255)  NOT NULL,             -- canonical domain of the hosting's site
    hosting  VARCHAR(32)   NOT NULL,             -- the Unix user, e.g. w4a100010
    uid      INTEGER       NOT NULL,
    gid      INTEGER       NOT NULL,
    docroot  VARCHAR(4095) NOT NULL,             -- under a W4AVhostDocRootBase
    php      VARCHAR(16),                        -- '8.2'; NULL or '-': no PHP
    state    VARCHAR(16)   NOT NULL DEFAULT 'active', -- active | suspended
    flags    VARCHAR(4200)                       -- NULL, or log,log=DIR,media=HOST
);

-- The web nodes only read: give them a user that may only SELECT, e.g.
--   CREATE USER 'w4a_web'@'10.0.0.%' IDENTIFIED BY '...';
--   GRANT SELECT ON w4a.w4a_domains TO 'w4a_web'@'10.0.0.%';

-- A hosting with two names and a wildcard site:
--   INSERT INTO w4a_domains VALUES
--     ('example.com', 'example.com', 'w4a100010', 100010, 100010,
--      '/datas/vol1/w4a100010/var/www/example.com', '8.2', 'active', 'log'),
--     ('www.example.com', 'example.com', 'w4a100010', 100010, 100010,
--      '/datas/vol1/w4a100010/var/www/example.com', '8.2', 'active', 'log'),
--     ('*.sites.example.org', 'sites.example.org', 'w4a100012', 100012, 100012,
--      '/datas/vol1/w4a100012/var/www/sites', '8.2', 'active', NULL);
-- After a change, tell the nodes:
--   w4a-vhostmap invalidate --memcached 10.0.0.5:11211,10.0.0.6:11211 \
--       --key /etc/w4a/memcached.key www.example.com
