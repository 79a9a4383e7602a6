PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE documents (
	id INTEGER NOT NULL, 
	integration VARCHAR(200) NOT NULL, 
	doc_id VARCHAR(300) NOT NULL, 
	version VARCHAR(100) NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	attempts INTEGER NOT NULL, 
	last_error TEXT, 
	remote_ref TEXT, 
	delivered_at DATETIME, 
	sending_since DATETIME, 
	approved_at DATETIME, 
	fingerprint TEXT, 
	doc_type VARCHAR(100), 
	number VARCHAR(200), 
	supplier VARCHAR(300), 
	first_seen DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	last_run VARCHAR(64), 
	PRIMARY KEY (id), 
	CONSTRAINT uq_documents_key UNIQUE (integration, doc_id, version)
);
INSERT INTO documents VALUES(1,'acme/invoices','ACME-1','v1','delivered',0,NULL,'acme/invoice/ACME-1.pdf','2026-12-01 19:53:15.025491',NULL,'2026-11-01 09:00:00.000000','1000:171','invoice','INV-1','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.025974','run-1');
INSERT INTO documents VALUES(2,'acme/invoices','ACME-2','v2','delivered',0,NULL,'acme/invoice/ACME-2.pdf','2026-12-01 19:53:15.025491',NULL,'2026-11-02 09:00:00.000000','2000:172','invoice','INV-2','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.025974','run-1');
INSERT INTO documents VALUES(3,'acme/invoices','ACME-3','v3','failed',1,'document ACME-3: 503 from receiver',NULL,NULL,NULL,'2026-11-03 09:00:00.000000','3000:173','invoice','INV-3','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.026917','run-1');
INSERT INTO documents VALUES(4,'acme/invoices','ACME-4','v4','needs-attention',1,'document ACME-4: lookup key ''X'' missing',NULL,NULL,NULL,'2026-11-04 09:00:00.000000','4000:174','invoice','INV-4','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.026917','run-1');
INSERT INTO documents VALUES(5,'acme/invoices','ACME-5','v5','discarded',1,'document ACME-5: lookup key ''Y'' missing',NULL,NULL,NULL,'2026-11-05 09:00:00.000000','5000:175','invoice','INV-5','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.027813','run-2');
INSERT INTO documents VALUES(6,'acme/invoices','ACME-6','v6','superseded',0,NULL,NULL,NULL,'2026-12-01 19:53:15.021119','2026-11-06 09:00:00.000000','6000:176','invoice','INV-6','Globex BV','2026-12-01 19:53:15.021190','2026-12-01 19:53:15.032428','run-3');
INSERT INTO documents VALUES(7,'acme/invoices','ACME-7','unreadable','pending',0,'document ACME-7: ACME-7.json is still being written',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'2026-12-01 19:53:15.030031','2026-12-01 19:53:15.030031','run-2');
INSERT INTO documents VALUES(8,'acme/invoices','ACME-1','v1b','pending',0,NULL,NULL,NULL,'2026-12-01 19:53:15.030983','2026-11-01 09:00:00.000000','1000:171','invoice','INV-1','Globex BV','2026-12-01 19:53:15.031024','2026-12-01 19:53:15.031024','run-3');
CREATE TABLE cursors (
	integration VARCHAR(200) NOT NULL, 
	position DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	last_run VARCHAR(64), 
	PRIMARY KEY (integration)
);
INSERT INTO cursors VALUES('acme/invoices','2026-11-20 12:30:00.000000','2026-12-01 19:53:15.033460','run-3');
INSERT INTO cursors VALUES('globex/archive','2026-11-19 08:00:00.000000','2026-12-01 19:53:15.034276','run-4');
CREATE TABLE events (
	id INTEGER NOT NULL, 
	integration VARCHAR(200) NOT NULL, 
	doc_id VARCHAR(300), 
	version VARCHAR(100), 
	at DATETIME NOT NULL, 
	event VARCHAR(40) NOT NULL, 
	detail TEXT, 
	run VARCHAR(64), 
	PRIMARY KEY (id)
);
INSERT INTO events VALUES(1,'acme/invoices','ACME-1','v1','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(2,'acme/invoices','ACME-2','v2','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(3,'acme/invoices','ACME-3','v3','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(4,'acme/invoices','ACME-4','v4','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(5,'acme/invoices','ACME-5','v5','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(6,'acme/invoices','ACME-6','v6','2026-12-01 19:53:15.024759','attempt',NULL,'run-1');
INSERT INTO events VALUES(7,'acme/invoices','ACME-1','v1','2026-12-01 19:53:15.027592','delivered','acme/invoice/ACME-1.pdf','run-1');
INSERT INTO events VALUES(8,'acme/invoices','ACME-2','v2','2026-12-01 19:53:15.027592','already-present','acme/invoice/ACME-2.pdf','run-1');
INSERT INTO events VALUES(9,'acme/invoices','ACME-3','v3','2026-12-01 19:53:15.027592','failed','document ACME-3: 503 from receiver','run-1');
INSERT INTO events VALUES(10,'acme/invoices','ACME-4','v4','2026-12-01 19:53:15.027592','needs-attention','document ACME-4: lookup key ''X'' missing','run-1');
INSERT INTO events VALUES(11,'acme/invoices','ACME-5','v5','2026-12-01 19:53:15.027592','needs-attention','document ACME-5: lookup key ''Y'' missing','run-1');
INSERT INTO events VALUES(12,'acme/invoices','ACME-5','v5','2026-12-01 19:53:15.029467','discarded','by ops: duplicate scan','run-2');
INSERT INTO events VALUES(13,'acme/invoices','ACME-7','unreadable','2026-12-01 19:53:15.030826','waiting','document ACME-7: ACME-7.json is still being written','run-2');
INSERT INTO events VALUES(14,'acme/invoices','ACME-1','v1b','2026-12-01 19:53:15.032200','attempt',NULL,'run-3');
INSERT INTO events VALUES(15,'acme/invoices','ACME-6','v6','2026-12-01 19:53:15.032806','superseded','no longer matches the integration''s filters','run-3');
INSERT INTO events VALUES(16,'acme/invoices',NULL,NULL,'2026-12-01 19:53:15.033714','cursor','2026-11-20T12:30:00+00:00','run-3');
INSERT INTO events VALUES(17,'globex/archive',NULL,NULL,'2026-12-01 19:53:15.034427','cursor','2026-11-19T08:00:00+00:00','run-4');
INSERT INTO events VALUES(18,'acme/invoices','ACME-4','v4','2026-12-01 19:53:15.034674','retry-requested','by ops: vendor added','run-5');
CREATE TABLE backfills (
	id VARCHAR(64) NOT NULL, 
	integration VARCHAR(200) NOT NULL, 
	spec TEXT NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	chunks INTEGER NOT NULL, 
	started_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	last_run VARCHAR(64), 
	PRIMARY KEY (id)
);
INSERT INTO backfills VALUES('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','acme/invoices','{"since": "2026-10-01"}','running',3,'2026-12-01 19:53:15.034782','2026-12-01 19:53:15.035980','run-6');
CREATE TABLE backfill_chunks (
	backfill VARCHAR(64) NOT NULL, 
	chunk_start DATETIME NOT NULL, 
	chunk_end DATETIME NOT NULL, 
	status VARCHAR(20) NOT NULL, 
	summary TEXT, 
	run VARCHAR(64), 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (backfill, chunk_start)
);
INSERT INTO backfill_chunks VALUES('bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb','2026-10-01 00:00:00.000000','2026-10-07 23:59:59.999999','done','2 delivered','run-7','2026-12-01 19:53:15.035980');
CREATE INDEX ix_documents_status ON documents (integration, status);
CREATE INDEX ix_events_doc ON events (integration, doc_id);
COMMIT;
