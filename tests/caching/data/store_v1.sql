-- A run store written by flowbook at schema version 1 (sqlite3 .dump of a real store:
-- one flow run calling two cached tasks), for the migration test.
BEGIN TRANSACTION;
CREATE TABLE cache_entries (
	task_key VARCHAR(512) NOT NULL, 
	"key" VARCHAR(512) NOT NULL, 
	task_name VARCHAR(255) NOT NULL, 
	flow_name VARCHAR(255), 
	value BLOB, 
	result_file VARCHAR(255), 
	size INTEGER NOT NULL, 
	created FLOAT NOT NULL, 
	expires FLOAT, 
	hits INTEGER NOT NULL, 
	input_preview TEXT, 
	PRIMARY KEY (task_key, "key")
);
INSERT INTO "cache_entries" VALUES('script:/tmp/v1gen/gen.py:double','d5133ac3603d17c4058009fc4a7dfab2905ae4a5ee71587e14e306ee1298fc9a','double','v1-flow',X'80054B022E',NULL,5,1.79527769346783900262e+09,NULL,0,'{"x": "1"}');
INSERT INTO "cache_entries" VALUES('script:/tmp/v1gen/gen.py:double','04acd1ac9a4a9d19e866c9e2fd7c729995b412cb4df4fbcf1b8f50f54d86c838','double','v1-flow',X'80054B042E',NULL,5,1.79527769346870160098e+09,NULL,1,'{"x": "2"}');
INSERT INTO "cache_entries" VALUES('script:/tmp/v1gen/gen.py:greet','20d24cc9f52c96df18b41385e1d31b6f06427f11064e0223aeace391729c7858','greet','v1-flow',X'80059511000000000000008C0D68656C6C6F204D617276696E21942E',NULL,28,1.7952776934708812237e+09,2.11063769347081446646e+09,0,'{"name": "''Marvin''", "punctuation": "''!''"}');
CREATE TABLE flow_runs (
	id VARCHAR(36) NOT NULL, 
	name VARCHAR(255) NOT NULL, 
	flow_name VARCHAR(255) NOT NULL, 
	flow_version VARCHAR(255), 
	project VARCHAR(255), 
	process_id VARCHAR(36), 
	parent_task_run_id VARCHAR(36), 
	resumed_from VARCHAR(36), 
	tags TEXT, 
	parameters BLOB, 
	parameters_preview TEXT, 
	state_type VARCHAR(16), 
	state_name VARCHAR(32), 
	state_message TEXT, 
	run_count INTEGER NOT NULL, 
	created_at FLOAT NOT NULL, 
	start_time FLOAT, 
	end_time FLOAT, 
	PRIMARY KEY (id)
);
INSERT INTO "flow_runs" VALUES('fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','v1-run','v1-flow','4917b4d59b6a68d6',NULL,'81c5cd3c-43b3-49ce-8c9d-e811c4879743',NULL,NULL,'[]',X'80057D942E','{}','COMPLETED','Completed','All states completed.',1,1.79527769345975184438e+09,1.7952776934598536491e+09,1.79527769347094655035e+09);
CREATE TABLE flowbook_meta (
	"key" VARCHAR(64) NOT NULL, 
	value TEXT NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "flowbook_meta" VALUES('schema_version','1');
CREATE TABLE logs (
	id INTEGER NOT NULL, 
	flow_run_id VARCHAR(36), 
	task_run_id VARCHAR(36), 
	level INTEGER NOT NULL, 
	logger VARCHAR(255) NOT NULL, 
	message TEXT NOT NULL, 
	timestamp FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE processes (
	id VARCHAR(36) NOT NULL, 
	host VARCHAR(255) NOT NULL, 
	pid INTEGER NOT NULL, 
	pid_start VARCHAR(64), 
	started_at FLOAT NOT NULL, 
	heartbeat_at FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE states (
	id INTEGER NOT NULL, 
	run_id VARCHAR(36) NOT NULL, 
	run_kind VARCHAR(4) NOT NULL, 
	type VARCHAR(16) NOT NULL, 
	name VARCHAR(32) NOT NULL, 
	message TEXT, 
	timestamp FLOAT NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "states" VALUES(1,'fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','flow','PENDING','Pending',NULL,1.79527769345983171465e+09);
INSERT INTO "states" VALUES(2,'fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','flow','RUNNING','Running',NULL,1.79527769345986533159e+09);
INSERT INTO "states" VALUES(3,'fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','flow','COMPLETED','Completed','All states completed.',1.79527769347093439102e+09);
CREATE TABLE task_run_edges (
	upstream_id VARCHAR(36) NOT NULL, 
	downstream_id VARCHAR(36) NOT NULL, 
	PRIMARY KEY (upstream_id, downstream_id)
);
CREATE TABLE task_runs (
	id VARCHAR(36) NOT NULL, 
	flow_run_id VARCHAR(36), 
	name VARCHAR(255) NOT NULL, 
	task_name VARCHAR(255) NOT NULL, 
	task_key TEXT, 
	dynamic_key INTEGER NOT NULL, 
	subflow_run_id VARCHAR(36), 
	tags TEXT, 
	parameters_preview TEXT, 
	input_hash VARCHAR(64), 
	cache_key TEXT, 
	state_type VARCHAR(16), 
	state_name VARCHAR(32), 
	state_message TEXT, 
	run_count INTEGER NOT NULL, 
	result BLOB, 
	result_file VARCHAR(255), 
	created_at FLOAT NOT NULL, 
	start_time FLOAT, 
	end_time FLOAT, 
	PRIMARY KEY (id)
);
INSERT INTO "task_runs" VALUES('8b843683-15cd-400b-ad58-996f88c44c3f','fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','double-0','double','script:/tmp/v1gen/gen.py:double',0,NULL,'[]','{"x": "1"}',NULL,'d5133ac3603d17c4058009fc4a7dfab2905ae4a5ee71587e14e306ee1298fc9a','COMPLETED','Completed',NULL,1,X'80054B022E',NULL,1.79527769345993018154e+09,1.79527769346766662593e+09,1.79527769346785902974e+09);
INSERT INTO "task_runs" VALUES('a3089896-bcdd-4351-877a-b9600661483b','fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','double-1','double','script:/tmp/v1gen/gen.py:double',1,NULL,'[]','{"x": "2"}',NULL,'04acd1ac9a4a9d19e866c9e2fd7c729995b412cb4df4fbcf1b8f50f54d86c838','COMPLETED','Completed',NULL,1,X'80054B042E',NULL,1.79527769346790766718e+09,1.79527769346864509584e+09,1.7952776934687187672e+09);
INSERT INTO "task_runs" VALUES('060ab334-0035-4ab4-9baa-b916d794b210','fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','double-2','double','script:/tmp/v1gen/gen.py:double',2,NULL,'[]','{"x": "2"}',NULL,'04acd1ac9a4a9d19e866c9e2fd7c729995b412cb4df4fbcf1b8f50f54d86c838','COMPLETED','Cached',NULL,0,NULL,NULL,1.79527769346875023842e+09,NULL,1.79527769346890163425e+09);
INSERT INTO "task_runs" VALUES('27b35be8-725e-45f7-a6e3-f47a65399840','fbef88c6-103b-4fdf-8e54-2a95ec2a0ec3','greet-0','greet','script:/tmp/v1gen/gen.py:greet',0,NULL,'[]','{"name": "''Marvin''", "punctuation": "''!''"}',NULL,'20d24cc9f52c96df18b41385e1d31b6f06427f11064e0223aeace391729c7858','COMPLETED','Completed',NULL,1,X'80059511000000000000008C0D68656C6C6F204D617276696E21942E',NULL,1.79527769346896123878e+09,1.79527769347078871731e+09,1.79527769347089815135e+09);
CREATE INDEX ix_flow_runs_flow_name ON flow_runs (flow_name);
CREATE INDEX ix_flow_runs_state_type ON flow_runs (state_type);
CREATE INDEX ix_flow_runs_created_at ON flow_runs (created_at);
CREATE INDEX ix_task_runs_flow_run_id ON task_runs (flow_run_id);
CREATE INDEX ix_task_run_edges_downstream ON task_run_edges (downstream_id);
CREATE INDEX ix_states_run_id ON states (run_id);
CREATE INDEX ix_logs_timestamp ON logs (timestamp);
CREATE INDEX ix_logs_flow_run_id ON logs (flow_run_id);
CREATE INDEX ix_cache_entries_task_name ON cache_entries (task_name);
COMMIT;
