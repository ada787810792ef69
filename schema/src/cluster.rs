//! The stored contract on a ClickHouse cluster (`[clickhouse] cluster = "NAME"`).
//!
//! Why a translation and not a second schema: every table keeps the one definition in
//! [`crate::migrations`], written for one server, and this module derives its cluster form, so the
//! two layouts cannot drift apart and a later migration (a new table, a new feed) runs on a
//! cluster without being written twice. A statement with no cluster form here fails the migration
//! with its text, rather than creating something that only half works.
//!
//! On a cluster, a table `T` of the contract becomes:
//! - `T_local`, created `ON CLUSTER` on every server, with the `Replicated` variant of its engine
//!   (ZooKeeper path `/clickhouse/tables/{shard}/verdict/T`, replica `{replica}`, from each
//!   server's `macros`), holding one shard's rows on each of its replicas;
//! - `T`, a `Distributed` table over `T_local` under the name the rest of the code uses, so
//!   writers and readers do not branch on the layout. Rows are sharded by `cityHash64(chain_id)`:
//!   one chain's rows live on one shard, so `(chain_id, seq)` deduplication (`FINAL`, `LIMIT 1 BY`)
//!   stays a per-shard matter and holds across the cluster. Tables without a chain (the hourly
//!   counts) shard at random: they are only ever summed.
//!
//! Materialized views are created `ON CLUSTER` between the local tables: each fires on the server
//! that receives a shard's insert, and its output replicates like any other insert.
//!
//! The migrations table is replicated to every server of every shard (one ZooKeeper path for the
//! whole cluster), so any server answers which versions are applied; `{replica}` must therefore be
//! unique across the cluster (the host name is the usual choice). A cluster starts from the
//! current schema ([`BASELINE`](crate::migrations)) rather than replaying the single-server
//! history (renames and refills of tables a new cluster does not have).

/// A migration statement has no cluster form, or a name cannot be used in DDL.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{what} {name:?} is not a plain identifier (letters, digits, '_')")]
    Name { what: &'static str, name: String },
    #[error("migration statement has no cluster form: {0}")]
    Untranslatable(String),
}

/// Where the contract's DDL goes on a cluster: the cluster's name (`remote_servers`) and the
/// database, both checked to be identifiers (they are spliced into DDL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    name: String,
    database: String,
}

/// The suffix of a distributed table's local (replicated) table.
pub const LOCAL_SUFFIX: &str = "_local";

impl Cluster {
    pub fn new(name: &str, database: &str) -> Result<Self, ClusterError> {
        Ok(Self {
            name: identifier("cluster", name)?.into(),
            database: identifier("database", database)?.into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The migrations table, replicated to every server of the cluster.
    pub fn migrations_table(&self, columns: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_migrations ON CLUSTER {c} ({columns}) \
             ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/verdict/schema_migrations', \
             '{{replica}}') ORDER BY version",
            db = self.database,
            c = self.name,
        )
    }

    /// The cluster form of one single-server migration statement.
    pub fn translate(&self, sql: &str) -> Result<Vec<String>, ClusterError> {
        let sql = sql.trim();
        if let Some(rest) = strip_create(sql, "CREATE TABLE ") {
            self.table(rest)
        } else if let Some(rest) = strip_create(sql, "CREATE MATERIALIZED VIEW ") {
            self.view(rest)
        } else if let Some(name) = sql.strip_prefix("DROP TABLE IF EXISTS ") {
            self.drop(name)
        } else if let Some(rest) = sql.strip_prefix("INSERT INTO ") {
            self.insert(rest)
        } else {
            Err(untranslatable(sql))
        }
    }

    /// `name (columns) ENGINE = Engine[(args)] rest` → the local table and its distributed face.
    fn table(&self, def: &str) -> Result<Vec<String>, ClusterError> {
        let (name, after_name) = split_identifier(def).ok_or_else(|| untranslatable(def))?;
        let (columns, engine) = after_name
            .split_once("ENGINE = ")
            .ok_or_else(|| untranslatable(def))?;
        let (engine_name, after_engine) = split_identifier(engine)
            .filter(|(e, _)| e.ends_with("MergeTree"))
            .ok_or_else(|| untranslatable(def))?;
        let (args, rest) = engine_args(after_engine).ok_or_else(|| untranslatable(def))?;
        let (db, c) = (&self.database, &self.name);
        let zk_path = format!("'/clickhouse/tables/{{shard}}/verdict/{name}', '{{replica}}'");
        let args = match args {
            "" => zk_path,
            args => format!("{zk_path}, {args}"),
        };
        let key = match columns.contains("chain_id String") {
            true => "cityHash64(chain_id)",
            false => "rand()",
        };
        Ok(vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c} {columns}\
                 ENGINE = Replicated{engine_name}({args}){rest}",
                columns = columns.trim_start(),
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {c} AS {db}.{name}{LOCAL_SUFFIX} \
                 ENGINE = Distributed({c}, {db}, {name}{LOCAL_SUFFIX}, {key})"
            ),
        ])
    }

    /// `feed TO target AS SELECT ... FROM source ...` → the same view between local tables.
    fn view(&self, def: &str) -> Result<Vec<String>, ClusterError> {
        let (name, after_name) = split_identifier(def).ok_or_else(|| untranslatable(def))?;
        let (target, select) = after_name
            .trim_start()
            .strip_prefix("TO ")
            .and_then(split_identifier)
            .ok_or_else(|| untranslatable(def))?;
        let (before, source_and_rest) = select
            .split_once("FROM ")
            .ok_or_else(|| untranslatable(def))?;
        let (source, rest) =
            split_identifier(source_and_rest).ok_or_else(|| untranslatable(def))?;
        if rest.contains("FROM ") || rest.contains("JOIN ") {
            return Err(untranslatable(def));
        }
        let (db, c) = (&self.database, &self.name);
        Ok(vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{name} ON CLUSTER {c} \
             TO {db}.{target}{LOCAL_SUFFIX}{before}FROM {db}.{source}{LOCAL_SUFFIX}{rest}"
        )])
    }

    /// `name` → its distributed table (or view) and its local table, wherever they exist.
    fn drop(&self, name: &str) -> Result<Vec<String>, ClusterError> {
        let name = match split_identifier(name) {
            Some((name, "")) => name,
            _ => return Err(untranslatable(name)),
        };
        let (db, c) = (&self.database, &self.name);
        Ok(vec![
            format!("DROP TABLE IF EXISTS {db}.{name} ON CLUSTER {c}"),
            format!("DROP TABLE IF EXISTS {db}.{name}{LOCAL_SUFFIX} ON CLUSTER {c}"),
        ])
    }

    /// `target SELECT ... FROM source ...` → the same copy between the distributed tables, run
    /// once (not `ON CLUSTER`): the rows of every shard, each written to the shard of its chain.
    fn insert(&self, def: &str) -> Result<Vec<String>, ClusterError> {
        let (target, select) = split_identifier(def).ok_or_else(|| untranslatable(def))?;
        let (before, source_and_rest) = select
            .split_once("FROM ")
            .ok_or_else(|| untranslatable(def))?;
        let (source, rest) =
            split_identifier(source_and_rest).ok_or_else(|| untranslatable(def))?;
        if !before.trim_start().starts_with("SELECT ")
            || rest.contains("FROM ")
            || rest.contains("JOIN ")
        {
            return Err(untranslatable(def));
        }
        let db = &self.database;
        Ok(vec![format!(
            "INSERT INTO {db}.{target}{before}FROM {db}.{source}{rest}"
        )])
    }
}

fn untranslatable(sql: &str) -> ClusterError {
    ClusterError::Untranslatable(sql.chars().take(120).collect())
}

fn identifier<'a>(what: &'static str, name: &'a str) -> Result<&'a str, ClusterError> {
    match split_identifier(name) {
        Some((id, "")) => Ok(id),
        _ => Err(ClusterError::Name {
            what,
            name: name.into(),
        }),
    }
}

/// `sql` after `prefix` and an optional `IF NOT EXISTS`.
fn strip_create<'a>(sql: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = sql.strip_prefix(prefix)?;
    Some(rest.strip_prefix("IF NOT EXISTS ").unwrap_or(rest))
}

/// The leading identifier of `text` (after spaces) and what follows it.
fn split_identifier(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}

/// An engine's parenthesised arguments (`""` when it has none) and what follows them.
fn engine_args(text: &str) -> Option<(&str, &str)> {
    let Some(inner) = text.strip_prefix('(') else {
        return Some(("", text));
    };
    let mut depth = 1usize;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return Some((&inner[..i], &inner[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        Cluster::new("verdict", "audit").unwrap()
    }

    #[test]
    fn a_table_becomes_a_replicated_local_table_and_a_distributed_one_sharded_by_chain() {
        let sql = "CREATE TABLE IF NOT EXISTS chain_heads (\n    chain_id String,\n    version UInt64\n) \
                   ENGINE = ReplacingMergeTree(version)\nORDER BY chain_id";
        let out = cluster().translate(sql).unwrap();
        assert_eq!(
            out[0],
            "CREATE TABLE IF NOT EXISTS audit.chain_heads_local ON CLUSTER verdict (\n    chain_id String,\n    \
             version UInt64\n) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/verdict/chain_heads', \
             '{replica}', version)\nORDER BY chain_id"
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS audit.chain_heads ON CLUSTER verdict AS audit.chain_heads_local \
             ENGINE = Distributed(verdict, audit, chain_heads_local, cityHash64(chain_id))"
        );
    }

    #[test]
    fn engines_without_arguments_and_tables_without_a_chain() {
        let sql = "CREATE TABLE counts (hour DateTime, events UInt64) ENGINE = SummingMergeTree \
                   ORDER BY hour";
        let out = cluster().translate(sql).unwrap();
        assert!(out[0].contains(
            "ENGINE = ReplicatedSummingMergeTree('/clickhouse/tables/{shard}/verdict/counts', '{replica}') ORDER BY hour"
        ));
        assert!(out[1].ends_with("Distributed(verdict, audit, counts_local, rand())"));
    }

    #[test]
    fn a_feed_connects_the_local_tables() {
        let sql = "CREATE MATERIALIZED VIEW IF NOT EXISTS feed TO counts AS\nSELECT a, count() AS n\nFROM events\nGROUP BY a";
        assert_eq!(
            cluster().translate(sql).unwrap(),
            ["CREATE MATERIALIZED VIEW IF NOT EXISTS audit.feed ON CLUSTER verdict TO audit.counts_local AS\n\
              SELECT a, count() AS n\nFROM audit.events_local\nGROUP BY a"]
        );
    }

    #[test]
    fn a_drop_removes_both_faces_of_a_table() {
        assert_eq!(
            cluster()
                .translate("DROP TABLE IF EXISTS events_by_time")
                .unwrap(),
            [
                "DROP TABLE IF EXISTS audit.events_by_time ON CLUSTER verdict",
                "DROP TABLE IF EXISTS audit.events_by_time_local ON CLUSTER verdict",
            ]
        );
    }

    #[test]
    fn a_fill_copies_between_the_distributed_tables_once() {
        let sql = "INSERT INTO events_by_time\nSELECT time, seq\nFROM events";
        assert_eq!(
            cluster().translate(sql).unwrap(),
            ["INSERT INTO audit.events_by_time\nSELECT time, seq\nFROM audit.events"]
        );
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t SELECT * FROM u JOIN v USING x",
            "INSERT INTO t SELECT * FROM u WHERE a IN (SELECT a FROM v)",
            "DROP TABLE t",
            "DROP TABLE IF EXISTS t ON CLUSTER x",
            "RENAME TABLE a TO b",
            "CREATE TABLE t (a UInt8) ENGINE = Log",
            "CREATE MATERIALIZED VIEW v TO t AS SELECT * FROM a JOIN b USING x",
        ] {
            assert!(
                matches!(
                    cluster().translate(sql),
                    Err(ClusterError::Untranslatable(_))
                ),
                "{sql}"
            );
        }
        assert!(Cluster::new("a b", "x").is_err());
        assert!(Cluster::new("a", "x;DROP").is_err());
        assert!(Cluster::new("", "x").is_err());
    }
}
