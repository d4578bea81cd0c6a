//! Commands from other hosts (`vigil fleet restart`): a row in `vigil_commands` and a
//! `NOTIFY vigil_commands`. This node listens (no polling), takes the rows addressed to it,
//! hands each to the loop exactly as the API would — a person's command, journaled with its
//! reason — and writes back what came of it. A command older than a minute when it is seen
//! is not carried out (its requester has given up waiting), and says so.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot};
use vigil_core::{Command, Requester};

use crate::api::ApiRequest;

/// The channel the CLI notifies.
pub const CHANNEL: &str = "vigil_commands";

pub struct Commands {
    pub pool: PgPool,
    pub node: String,
    pub loop_requests: mpsc::Sender<ApiRequest>,
}

impl Commands {
    pub async fn run(self) {
        loop {
            // A lost connection loses the notifications sent meanwhile: after every (re)connect
            // the rows waiting for this node are taken anyway.
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!("cluster: cannot listen for commands yet ({e})");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::debug!("cluster: cannot listen for commands yet ({e})");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            loop {
                if let Err(e) = self.take().await {
                    tracing::debug!("cluster: cannot take commands now ({e})");
                }
                if let Err(e) = listener.recv().await {
                    tracing::debug!("cluster: the commands' connection broke ({e})");
                    break;
                }
            }
        }
    }

    /// Carry out every command waiting for this node, oldest first.
    async fn take(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(i64, String, String, Option<String>, bool)> = sqlx::query_as(
            "UPDATE vigil_commands SET taken_at = now()
             WHERE node = $1 AND taken_at IS NULL
             RETURNING id, agent, command, reason, requested_at > now() - interval '1 minute'",
        )
        .bind(&self.node)
        .fetch_all(&self.pool)
        .await?;
        let mut rows = rows;
        rows.sort_by_key(|r| r.0);
        for (id, agent, command, reason, fresh) in rows {
            // The same commands as the API's, by the same names.
            let outcome = match (crate::api::parse_command(&command), fresh) {
                (_, false) => {
                    "not carried out: it waited more than a minute for this node".to_string()
                }
                (None, _) => format!("not carried out: `{command}` is not a command"),
                (Some(command), true) => self.carry_out(&agent, command, reason).await,
            };
            sqlx::query("UPDATE vigil_commands SET outcome = $2 WHERE id = $1")
                .bind(id)
                .bind(&outcome)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn carry_out(&self, agent: &str, command: Command, reason: Option<String>) -> String {
        let (reply, answer) = oneshot::channel();
        let note = Some(match reason {
            Some(r) => format!("from vigil fleet: {r}"),
            None => "from vigil fleet".to_string(),
        });
        let request = ApiRequest::Command {
            target: agent.to_string(),
            command,
            by: Requester::Cli,
            note,
            reply,
        };
        if self.loop_requests.send(request).await.is_err() {
            return "not carried out: vigil is stopping".into();
        }
        match answer.await {
            Ok(Ok(results)) => results
                .iter()
                .map(|r| format!("{}: {}", r.agent, r.outcome))
                .collect::<Vec<_>>()
                .join("; "),
            Ok(Err(refused)) => format!("refused: {refused}"),
            Err(_) => "not carried out: vigil is stopping".into(),
        }
    }
}
