//! The fixtures themselves: a throwaway cluster is logical-replication ready
//! and hands out isolated databases.

#![allow(clippy::unwrap_used)]

use strata_tests::pg::PgCluster;

#[tokio::test]
async fn throwaway_cluster_is_ready_for_logical_replication() {
    let cluster = PgCluster::shared();
    let a = cluster.fresh_database().await.unwrap();
    let b = cluster.fresh_database().await.unwrap();
    assert_ne!(a, b, "each test gets its own database");
    let client = strata_tests::pg::connect(&a).await.unwrap();
    let row = client.query_one("SHOW wal_level", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "logical");
    let row = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await.unwrap();
    assert!(row.get::<_, i32>(0) >= 150000);
    // A logical slot can be created with pgoutput, which the reader needs.
    client.batch_execute("CREATE TABLE t (id int primary key); CREATE PUBLICATION p FOR TABLE t").await.unwrap();
    let slot = client.query_one("SELECT slot_name::text FROM pg_create_logical_replication_slot('s_' || md5(random()::text), 'pgoutput')", &[]).await.unwrap();
    client.execute("SELECT pg_drop_replication_slot($1)", &[&slot.get::<_, String>(0)]).await.unwrap();
}
