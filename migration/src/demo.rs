//! The demo `orders` table, as the cron jobs sluice replaces have it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;
use sea_orm_migration::MigratorTraitSelf;

#[derive(Iden)]
enum Orders {
    Table,
    OrderId,
    Created,
}

/// Creates `orders (order_id VARCHAR(36) PRIMARY KEY, created DATETIME(6) NOT NULL)` with an
/// index on `created` on the source, if they do not exist. Untracked: sluice keeps no table
/// of its own in the source database.
pub async fn create_source_demo(
    db: &sea_orm_migration::sea_orm::DatabaseConnection,
) -> Result<(), DbErr> {
    let manager = SchemaManager::new(db);
    // MySQL has no CREATE INDEX IF NOT EXISTS: a table already there is left as it is.
    if manager.has_table("orders").await? {
        return Ok(());
    }
    CreateOrders::new(None).up(&manager).await
}

/// Creates `<schema>.orders (order_id text PRIMARY KEY, created timestamp(6) NOT NULL)` on
/// the target.
pub struct TargetDemo {
    pub schema: String,
}

impl MigratorTraitSelf for TargetDemo {
    fn migrations(&self) -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateOrders::new(Some(self.schema.clone())))]
    }
    /// Tracked per target schema (`demo_migrations` for `public`), so `migrate` into a
    /// second schema creates its table too.
    fn migration_table_name(&self) -> DynIden {
        match self.schema.as_str() {
            "public" => "demo_migrations".into_iden(),
            s => Alias::new(format!("demo_migrations_{s}")).into_iden(),
        }
    }
}

struct CreateOrders {
    schema: Option<String>,
}

impl CreateOrders {
    fn new(schema: Option<String>) -> Self {
        CreateOrders { schema }
    }
}

impl MigrationName for CreateOrders {
    fn name(&self) -> &str {
        "m20261125_000001_create_orders"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOrders {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = manager.get_database_backend() == DatabaseBackend::Postgres;
        if let (Some(schema), true) = (&self.schema, postgres) {
            manager
                .get_connection()
                .execute_unprepared(&format!(
                    "CREATE SCHEMA IF NOT EXISTS \"{}\"",
                    schema.replace('"', "\"\"")
                ))
                .await?;
        }
        let mut table = Table::create();
        match &self.schema {
            Some(schema) => table.table((Alias::new(schema), Orders::Table)),
            None => table.table(Orders::Table),
        };
        let (key_type, time_type) = if postgres {
            ("text", "timestamp(6)")
        } else {
            ("VARCHAR(36)", "DATETIME(6)")
        };
        table
            .if_not_exists()
            .col(
                ColumnDef::new(Orders::OrderId)
                    .custom(Alias::new(key_type))
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(Orders::Created)
                    .custom(Alias::new(time_type))
                    .not_null(),
            );
        manager.create_table(table).await?;
        if !postgres {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name("idx_orders_created")
                        .table(Orders::Table)
                        .col(Orders::Created)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut drop = Table::drop();
        match &self.schema {
            Some(schema) => drop.table((Alias::new(schema), Orders::Table)),
            None => drop.table(Orders::Table),
        };
        manager.drop_table(drop.if_exists().to_owned()).await
    }
}
