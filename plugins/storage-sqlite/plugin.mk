# storage-sqlite: the `storage` provider on SQLite. The C tests link the store
# itself (not the plugin glue) and drive it through its vtable.
storage-sqlite_LIBS      := -lsqlite3 -lpthread
# migrations and the connection pool are shared with storage-pg (storage-sqlite/shared)
storage-sqlite_SRCS      := $(wildcard plugins/storage-sqlite/*.c) plugins/storage-sqlite/shared/storage_migrate.c \
                            plugins/storage-sqlite/shared/storage_pool.c
storage-sqlite_TEST_SRCS := plugins/storage-sqlite/sqlite_store.c \
                            plugins/storage-sqlite/sqlite_conn.c \
                            plugins/storage-sqlite/sqlite_sync.c \
                            plugins/storage-sqlite/shared/storage_migrate.c plugins/storage-sqlite/shared/storage_pool.c

# Benchmark (not run by `make test`): durable commits/s, full vs group.
$(BUILD)/bench/storage-sqlite/bench_commit: plugins/storage-sqlite/bench/bench_commit.c \
        $(storage-sqlite_TEST_SRCS:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -Iplugins/storage-sqlite -o $@ $^ $(storage-sqlite_LIBS) $(SANITIZE)
