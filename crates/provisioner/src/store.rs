//! Schema `provisioner`: workspaces with their desired and observed state, and every transition.
//!
//! Observed state moves by compare-and-set (`transition` names the state it expects), so that a
//! reconciler that crashed and came back, or two that raced, can never move a workspace twice.

use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgRow};
use time::OffsetDateTime;
use uuid::Uuid;

/// The migrations of schema `provisioner`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What the owner wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
    Deleted,
}

/// What the runtime has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Pending,
    Starting,
    Running,
    Stopping,
    Stopped,
    Deleting,
    Deleted,
    Failed,
}

macro_rules! names {
    ($type:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }

            fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($name => Ok(Self::$variant),)*
                    other => Err(StoreError::Corrupt(format!("unknown state {other:?}"))),
                }
            }
        }
    };
}

names!(Desired { Running => "running", Stopped => "stopped", Deleted => "deleted" });
names!(Observed {
    Pending => "pending", Starting => "starting", Running => "running", Stopping => "stopping",
    Stopped => "stopped", Deleting => "deleting", Deleted => "deleted", Failed => "failed",
});

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{owner} already has a workspace named {name:?}: choose another name, or delete that one first"
    )]
    NameTaken { owner: String, name: String },
    #[error("no workspace {0}")]
    NotFound(Uuid),
    #[error("stored data is not what this version understands: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// A workspace row.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRow {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub blueprint_source: String,
    pub spec: serde_json::Value,
    pub image: String,
    pub runtime: String,
    pub desired: Desired,
    pub observed: Observed,
    pub reason: String,
    pub endpoint: String,
    pub idle_timeout_seconds: i64,
    pub created_at: OffsetDateTime,
    pub last_activity_at: OffsetDateTime,
}

/// A workspace to create.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub owner: String,
    pub name: String,
    pub blueprint_source: String,
    pub spec: serde_json::Value,
    pub image: String,
    pub runtime: String,
    pub idle_timeout_seconds: i64,
    /// Running, or Stopped to create it without starting it.
    pub desired: Desired,
}

/// A transition waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingTransition {
    pub id: i64,
    pub event_id: Uuid,
    pub workspace_id: Uuid,
    pub owner: String,
    pub to_state: String,
    pub reason: String,
    pub at: OffsetDateTime,
}

/// One stored transition.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Transition {
    #[sqlx(rename = "from_state")]
    pub from: String,
    #[sqlx(rename = "to_state")]
    pub to: String,
    pub reason: String,
}

const COLUMNS: &str = "id, owner, name, blueprint_source, spec, image, runtime, desired, observed, reason, endpoint, idle_timeout_seconds, created_at, last_activity_at";

fn row(row: &PgRow) -> Result<WorkspaceRow, StoreError> {
    Ok(WorkspaceRow {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        name: row.try_get("name")?,
        blueprint_source: row.try_get("blueprint_source")?,
        spec: row.try_get("spec")?,
        image: row.try_get("image")?,
        runtime: row.try_get("runtime")?,
        desired: Desired::parse(row.try_get("desired")?)?,
        observed: Observed::parse(row.try_get("observed")?)?,
        reason: row.try_get("reason")?,
        endpoint: row.try_get("endpoint")?,
        idle_timeout_seconds: row.try_get("idle_timeout_seconds")?,
        created_at: row.try_get("created_at")?,
        last_activity_at: row.try_get("last_activity_at")?,
    })
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a workspace: pending, wanted running.
    pub async fn create(&self, new: &NewWorkspace) -> Result<WorkspaceRow, StoreError> {
        let id = k8shell_common::ids::new_id();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO workspaces (id, owner, name, blueprint_source, spec, image, runtime, desired, observed, idle_timeout_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9) RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(&new.owner)
        .bind(&new.name)
        .bind(&new.blueprint_source)
        .bind(&new.spec)
        .bind(&new.image)
        .bind(&new.runtime)
        .bind(new.desired.as_str())
        .bind(new.idle_timeout_seconds)
        .fetch_one(&mut *tx)
        .await;
        let created = match inserted {
            Ok(created) => row(&created)?,
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("workspaces_name") => {
                return Err(StoreError::NameTaken {
                    owner: new.owner.clone(),
                    name: new.name.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        record(&mut tx, id, "", "pending", "created").await?;
        tx.commit().await?;
        Ok(created)
    }

    pub async fn get(&self, id: Uuid) -> Result<WorkspaceRow, StoreError> {
        let found = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(id))?;
        row(&found)
    }

    /// The owner's workspace by name (deleted ones are gone).
    pub async fn by_name(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<WorkspaceRow>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces WHERE owner = $1 AND name = $2 AND observed <> 'deleted'"
        )))
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|found| row(&found))
        .transpose()
    }

    /// Workspaces that exist, of one owner or of all, by name.
    pub async fn list(&self, owner: Option<&str>) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces WHERE observed <> 'deleted' AND ($1::text IS NULL OR owner = $1) ORDER BY owner, name"
        )))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// How many workspaces the owner has (the `provision` decision's count).
    pub async fn count(&self, owner: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM workspaces WHERE owner = $1 AND observed <> 'deleted' AND desired <> 'deleted'",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?)
    }

    /// What the owner wants now. A workspace wanted deleted stays so.
    pub async fn set_desired(
        &self,
        id: Uuid,
        desired: Desired,
    ) -> Result<WorkspaceRow, StoreError> {
        let updated = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE workspaces SET desired = $2, updated_at = now()
             WHERE id = $1 AND observed <> 'deleted' AND (desired <> 'deleted' OR $2 = 'deleted')
             RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(desired.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(id))?;
        row(&updated)
    }

    /// Moves the observed state from `from` to `to` and records why; false (and nothing
    /// changed) if the workspace is no longer in `from`.
    pub async fn transition(
        &self,
        id: Uuid,
        from: Observed,
        to: Observed,
        reason: &str,
        endpoint: Option<&str>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .transition_returning(id, from, to, reason, endpoint)
            .await?
            .is_some())
    }

    /// [`Store::transition`], answering with the workspace as it is now when it moved.
    pub async fn transition_returning(
        &self,
        id: Uuid,
        from: Observed,
        to: Observed,
        reason: &str,
        endpoint: Option<&str>,
    ) -> Result<Option<WorkspaceRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE workspaces SET observed = $3, reason = $4, endpoint = COALESCE($5, endpoint), updated_at = now()
             WHERE id = $1 AND observed = $2 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(reason)
        .bind(endpoint)
        .fetch_optional(&mut *tx)
        .await?
        .map(|moved| row(&moved))
        .transpose()?;
        if moved.is_some() {
            record(&mut tx, id, from.as_str(), to.as_str(), reason).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// Says why a workspace stays where it is (a stop or delete that failed and will be
    /// retried), without a transition.
    pub async fn set_reason(
        &self,
        id: Uuid,
        observed: Observed,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET reason = $3 WHERE id = $1 AND observed = $2")
            .bind(id)
            .bind(observed.as_str())
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The transitions of a workspace, oldest first.
    pub async fn transitions(&self, id: Uuid) -> Result<Vec<Transition>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT from_state, to_state, reason FROM transitions WHERE workspace_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Session activity (what idle stop looks at); never moves backwards.
    pub async fn touch(&self, id: Uuid, at: OffsetDateTime) -> Result<(), StoreError> {
        let touched = sqlx::query(
            "UPDATE workspaces SET last_activity_at = GREATEST(last_activity_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if touched == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(id))
        }
    }

    /// Workspaces in one observed state (the reconciler checks the running ones).
    pub async fn in_state(&self, observed: Observed) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces WHERE observed = $1 ORDER BY id"
        )))
        .bind(observed.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// Transitions not yet handed to the event publisher, oldest first.
    pub async fn unpublished(&self, max: i64) -> Result<Vec<PendingTransition>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT t.id, t.event_id, t.workspace_id, w.owner, t.to_state, t.reason, t.at
             FROM transitions t JOIN workspaces w ON w.id = t.workspace_id
             WHERE t.published_at IS NULL ORDER BY t.id LIMIT $1",
        )
        .bind(max)
        .fetch_all(&self.pool)
        .await?)
    }

    /// These transitions are in the event outbox.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query("UPDATE transitions SET published_at = now() WHERE id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Running workspaces, wanted running, idle longer than their timeout at `now`.
    pub async fn idle(&self, now: OffsetDateTime) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces
             WHERE observed = 'running' AND desired = 'running' AND idle_timeout_seconds > 0
               AND last_activity_at + make_interval(secs => idle_timeout_seconds) < $1
             ORDER BY last_activity_at"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    /// Workspaces whose observed state does not match what is wanted (the reconciler's work).
    /// A failed workspace wanted running waits for an explicit start.
    pub async fn unsettled(&self) -> Result<Vec<WorkspaceRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM workspaces
             WHERE observed <> 'deleted' AND desired <> observed
               AND NOT (observed = 'failed' AND desired = 'running')
             ORDER BY updated_at"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }
}

async fn record(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    from: &str,
    to: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO transitions (workspace_id, from_state, to_state, reason) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(from)
        .bind(to)
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
