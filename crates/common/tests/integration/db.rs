//! PostgreSQL: the real server from testkit, one schema per service.

use k8shell_common::db::{DatabaseConfig, DbError, connect};
use k8shell_testkit::Postgres;
use sqlx::Row as _;

static ALPHA: sqlx::migrate::Migrator = sqlx::migrate!("tests/integration/migrations/alpha");
static BETA: sqlx::migrate::Migrator = sqlx::migrate!("tests/integration/migrations/beta");

#[tokio::test]
async fn postgres_answers_a_query() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("answers").unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let row = sqlx::query("SELECT 40 + 2 AS n, current_database() AS db")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("n"), 42);
    assert_eq!(row.get::<String, _>("db"), "answers");
}

#[tokio::test]
async fn migrations_of_two_schemas_do_not_collide() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("k8shell").unwrap();
    let config = DatabaseConfig::new(&url);

    let alpha = connect(&config, "alpha", &ALPHA).await.unwrap();
    let beta = connect(&config, "beta", &BETA).await.unwrap();
    // Running again is a no-op, not an error.
    let alpha_again = connect(&config, "alpha", &ALPHA).await.unwrap();

    let owner: String = sqlx::query_scalar("SELECT owner FROM items WHERE id = 1")
        .fetch_one(&alpha_again)
        .await
        .unwrap();
    assert_eq!(owner, "alpha");
    let label: String = sqlx::query_scalar("SELECT label FROM items WHERE id = 1")
        .fetch_one(&beta)
        .await
        .unwrap();
    assert_eq!(label, "beta");

    // Each schema has its own migration history.
    let history = pg
        .psql(
            "k8shell",
            "SELECT table_schema || ':' || count(*) FROM information_schema.tables \
             WHERE table_name = '_sqlx_migrations' GROUP BY table_schema ORDER BY 1",
        )
        .unwrap();
    assert_eq!(history, "alpha:1\nbeta:1");
    let versions = pg
        .psql(
            "k8shell",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM alpha._sqlx_migrations",
        )
        .unwrap();
    assert_eq!(versions, "1,2");
    let versions = pg
        .psql(
            "k8shell",
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM beta._sqlx_migrations",
        )
        .unwrap();
    assert_eq!(versions, "1");
    drop((alpha, beta));
}

#[tokio::test]
async fn a_bad_schema_name_is_refused_before_connecting() {
    let err = connect(
        &DatabaseConfig::new("postgres://nowhere/db"),
        "Bad-Name",
        &ALPHA,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DbError::SchemaName(_)), "{err}");
    assert!(err.to_string().contains("lowercase"), "{err}");
}

#[tokio::test]
async fn the_password_comes_from_its_file() {
    let pg = Postgres::start().unwrap();
    pg.psql("postgres", "CREATE ROLE svc LOGIN PASSWORD 'pw-from-file'")
        .unwrap();
    pg.psql("postgres", "CREATE DATABASE svcdb OWNER svc")
        .unwrap();
    // trust auth accepts anything over TCP, so require passwords for this role.
    let hba = pg.dir().join("data/pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all svc 127.0.0.1/32 scram-sha-256\n{rules}"),
    )
    .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "wrong\n").unwrap();
    let mut config = DatabaseConfig::new(format!("postgres://svc@127.0.0.1:{}/svcdb", pg.port()));
    config.password_file = Some(k8shell_common::config::SecretFile(secret.clone()));
    let err = connect(&config, "svc", &ALPHA).await.unwrap_err();
    assert!(matches!(err, DbError::Connect(_)), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "no password in errors: {err}"
    );

    std::fs::write(&secret, "pw-from-file\n").unwrap();
    let pool = connect(&config, "svc", &ALPHA).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM items")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
}
