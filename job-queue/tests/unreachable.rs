//! Which errors mean "the database is unreachable" (wait it out) and which
//! do not (report them).

use job_queue::{Queue, QueueError};

#[tokio::test]
async fn a_closed_port_is_unreachable_with_its_reason() {
    // Port 1 on loopback: nothing listens, the connection is refused.
    let err = Queue::connect("postgres://postgres@127.0.0.1:1/test").await.err().expect("nothing listens on port 1");
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("refused"), "the reason is kept: {err}");
}

#[tokio::test]
async fn a_bad_query_is_not_unreachable() {
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let err: QueueError = sqlx::query("SELECT * FROM no_such_table").execute(&pool).await.unwrap_err().into();
    assert!(!err.is_unreachable(), "{err}");
    assert!(!QueueError::Conflict("x".into()).is_unreachable());
}
