--
-- PostgreSQL database dump
--

\restrict 22ga8LsmOw4DlITDyROby0JOt6mKojTbIyWCaXOlUsRyQToEZvVtflnfbJ5BUBK

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: backfill_chunks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.backfill_chunks (
    backfill character varying(64) NOT NULL,
    chunk_start timestamp with time zone NOT NULL,
    chunk_end timestamp with time zone NOT NULL,
    status character varying(20) NOT NULL,
    summary text,
    run character varying(64),
    updated_at timestamp with time zone NOT NULL
);


--
-- Name: backfills; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.backfills (
    id character varying(64) NOT NULL,
    integration character varying(200) NOT NULL,
    spec text NOT NULL,
    status character varying(20) NOT NULL,
    chunks integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    last_run character varying(64)
);


--
-- Name: cursors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.cursors (
    integration character varying(200) NOT NULL,
    "position" timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    last_run character varying(64)
);


--
-- Name: documents; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.documents (
    id integer NOT NULL,
    integration character varying(200) NOT NULL,
    doc_id character varying(300) NOT NULL,
    version character varying(100) NOT NULL,
    status character varying(20) NOT NULL,
    attempts integer NOT NULL,
    last_error text,
    remote_ref text,
    delivered_at timestamp with time zone,
    sending_since timestamp with time zone,
    approved_at timestamp with time zone,
    fingerprint text,
    doc_type character varying(100),
    number character varying(200),
    supplier character varying(300),
    first_seen timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    last_run character varying(64)
);


--
-- Name: documents_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.documents_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: documents_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.documents_id_seq OWNED BY public.documents.id;


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    id integer NOT NULL,
    integration character varying(200) NOT NULL,
    doc_id character varying(300),
    version character varying(100),
    at timestamp with time zone NOT NULL,
    event character varying(40) NOT NULL,
    detail text,
    run character varying(64)
);


--
-- Name: events_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.events_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: events_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.events_id_seq OWNED BY public.events.id;


--
-- Name: documents id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.documents ALTER COLUMN id SET DEFAULT nextval('public.documents_id_seq'::regclass);


--
-- Name: events id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events ALTER COLUMN id SET DEFAULT nextval('public.events_id_seq'::regclass);


--
-- Data for Name: backfill_chunks; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.backfill_chunks (backfill, chunk_start, chunk_end, status, summary, run, updated_at) FROM stdin;
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb	2026-10-01 00:00:00+00	2026-10-07 23:59:59.999999+00	done	2 delivered	run-7	2026-12-01 19:53:16.232219+00
\.


--
-- Data for Name: backfills; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.backfills (id, integration, spec, status, chunks, started_at, updated_at, last_run) FROM stdin;
bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb	acme/invoices	{"since": "2026-10-01"}	running	3	2026-12-01 19:53:16.229411+00	2026-12-01 19:53:16.232219+00	run-6
\.


--
-- Data for Name: cursors; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.cursors (integration, "position", updated_at, last_run) FROM stdin;
acme/invoices	2026-11-20 12:30:00+00	2026-12-01 19:53:16.224198+00	run-3
globex/archive	2026-11-19 08:00:00+00	2026-12-01 19:53:16.227375+00	run-4
\.


--
-- Data for Name: documents; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.documents (id, integration, doc_id, version, status, attempts, last_error, remote_ref, delivered_at, sending_since, approved_at, fingerprint, doc_type, number, supplier, first_seen, updated_at, last_run) FROM stdin;
1	acme/invoices	ACME-1	v1	delivered	0	\N	acme/invoice/ACME-1.pdf	2026-12-01 19:53:16.198408+00	\N	2026-11-01 09:00:00+00	1000:171	invoice	INV-1	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.200504+00	run-1
2	acme/invoices	ACME-2	v2	delivered	0	\N	acme/invoice/ACME-2.pdf	2026-12-01 19:53:16.198408+00	\N	2026-11-02 09:00:00+00	2000:172	invoice	INV-2	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.200504+00	run-1
3	acme/invoices	ACME-3	v3	failed	1	document ACME-3: 503 from receiver	\N	\N	\N	2026-11-03 09:00:00+00	3000:173	invoice	INV-3	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.203441+00	run-1
4	acme/invoices	ACME-4	v4	needs-attention	1	document ACME-4: lookup key 'X' missing	\N	\N	\N	2026-11-04 09:00:00+00	4000:174	invoice	INV-4	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.203441+00	run-1
5	acme/invoices	ACME-5	v5	discarded	1	document ACME-5: lookup key 'Y' missing	\N	\N	\N	2026-11-05 09:00:00+00	5000:175	invoice	INV-5	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.207876+00	run-2
7	acme/invoices	ACME-7	unreadable	pending	0	document ACME-7: ACME-7.json is still being written	\N	\N	\N	\N	\N	\N	\N	\N	2026-12-01 19:53:16.213919+00	2026-12-01 19:53:16.213919+00	run-2
8	acme/invoices	ACME-1	v1b	pending	0	\N	\N	\N	2026-12-01 19:53:16.216399+00	2026-11-01 09:00:00+00	1000:171	invoice	INV-1	Globex BV	2026-12-01 19:53:16.216475+00	2026-12-01 19:53:16.216475+00	run-3
6	acme/invoices	ACME-6	v6	superseded	0	\N	\N	\N	2026-12-01 19:53:16.185928+00	2026-11-06 09:00:00+00	6000:176	invoice	INV-6	Globex BV	2026-12-01 19:53:16.186055+00	2026-12-01 19:53:16.220609+00	run-3
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (id, integration, doc_id, version, at, event, detail, run) FROM stdin;
1	acme/invoices	ACME-1	v1	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
2	acme/invoices	ACME-2	v2	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
3	acme/invoices	ACME-3	v3	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
4	acme/invoices	ACME-4	v4	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
5	acme/invoices	ACME-5	v5	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
6	acme/invoices	ACME-6	v6	2026-12-01 19:53:16.195685+00	attempt	\N	run-1
7	acme/invoices	ACME-1	v1	2026-12-01 19:53:16.206181+00	delivered	acme/invoice/ACME-1.pdf	run-1
8	acme/invoices	ACME-2	v2	2026-12-01 19:53:16.206181+00	already-present	acme/invoice/ACME-2.pdf	run-1
9	acme/invoices	ACME-3	v3	2026-12-01 19:53:16.206181+00	failed	document ACME-3: 503 from receiver	run-1
10	acme/invoices	ACME-4	v4	2026-12-01 19:53:16.206181+00	needs-attention	document ACME-4: lookup key 'X' missing	run-1
11	acme/invoices	ACME-5	v5	2026-12-01 19:53:16.206181+00	needs-attention	document ACME-5: lookup key 'Y' missing	run-1
12	acme/invoices	ACME-5	v5	2026-12-01 19:53:16.212227+00	discarded	by ops: duplicate scan	run-2
13	acme/invoices	ACME-7	unreadable	2026-12-01 19:53:16.21567+00	waiting	document ACME-7: ACME-7.json is still being written	run-2
14	acme/invoices	ACME-1	v1b	2026-12-01 19:53:16.219422+00	attempt	\N	run-3
15	acme/invoices	ACME-6	v6	2026-12-01 19:53:16.22198+00	superseded	no longer matches the integration's filters	run-3
16	acme/invoices	\N	\N	2026-12-01 19:53:16.224984+00	cursor	2026-11-20T12:30:00+00:00	run-3
17	globex/archive	\N	\N	2026-12-01 19:53:16.227694+00	cursor	2026-11-19T08:00:00+00:00	run-4
18	acme/invoices	ACME-4	v4	2026-12-01 19:53:16.22865+00	retry-requested	by ops: vendor added	run-5
\.


--
-- Name: documents_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.documents_id_seq', 8, true);


--
-- Name: events_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_id_seq', 18, true);


--
-- Name: backfill_chunks backfill_chunks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backfill_chunks
    ADD CONSTRAINT backfill_chunks_pkey PRIMARY KEY (backfill, chunk_start);


--
-- Name: backfills backfills_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.backfills
    ADD CONSTRAINT backfills_pkey PRIMARY KEY (id);


--
-- Name: cursors cursors_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.cursors
    ADD CONSTRAINT cursors_pkey PRIMARY KEY (integration);


--
-- Name: documents documents_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (id);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (id);


--
-- Name: documents uq_documents_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.documents
    ADD CONSTRAINT uq_documents_key UNIQUE (integration, doc_id, version);


--
-- Name: ix_documents_status; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_documents_status ON public.documents USING btree (integration, status);


--
-- Name: ix_events_doc; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_events_doc ON public.events USING btree (integration, doc_id);


--
-- PostgreSQL database dump complete
--

\unrestrict 22ga8LsmOw4DlITDyROby0JOt6mKojTbIyWCaXOlUsRyQToEZvVtflnfbJ5BUBK

