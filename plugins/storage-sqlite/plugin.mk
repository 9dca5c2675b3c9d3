# storage-sqlite: the `storage` provider on SQLite. The C tests link the store
# itself (not the plugin glue) and drive it through its vtable.
storage-sqlite_LIBS      := -lsqlite3 -lpthread
# migrations and the connection pool are shared with storage-pg (lib/storage)
storage-sqlite_SRCS      := $(wildcard plugins/storage-sqlite/*.c) lib/storage/storage_migrate.c \
                            lib/storage/storage_pool.c
storage-sqlite_TEST_SRCS := plugins/storage-sqlite/sqlite_store.c \
                            plugins/storage-sqlite/sqlite_conn.c \
                            plugins/storage-sqlite/sqlite_sync.c \
                            lib/storage/storage_migrate.c lib/storage/storage_pool.c

# Benchmark (not run by `make test`): durable commits/s, full vs group.
$(BUILD)/bench/storage-sqlite/bench_commit: plugins/storage-sqlite/bench/bench_commit.c \
        $(storage-sqlite_TEST_SRCS:%.c=$(BUILD)/obj/%.o)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -Iplugins/storage-sqlite -o $@ $^ $(storage-sqlite_LIBS) $(SANITIZE)
