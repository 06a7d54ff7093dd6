//! Several replicas sharing one PostgreSQL mirror (issue #22).

mod scale;
