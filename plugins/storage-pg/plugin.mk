# storage-pg: the `storage` provider on PostgreSQL (libpq). The C tests link
# the SQL rewriting (pure); everything that needs a server is tested from
# Python through a real node (tests/*.py, tests/pg.py starts PostgreSQL).
storage-pg_CFLAGS    := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
storage-pg_LIBS      := $(shell pkg-config --libs libpq 2>/dev/null || echo -lpq) -lpthread
storage-pg_TEST_SRCS := plugins/storage-pg/pg_sql.c
# migrations and the connection pool are shared with storage-sqlite (storage-sqlite/shared)
storage-pg_SRCS      := $(wildcard plugins/storage-pg/*.c) plugins/storage-sqlite/shared/storage_migrate.c \
                        plugins/storage-sqlite/shared/storage_pool.c

# The contract test plugin: routes that drive whichever storage provider the
# node uses, so one pytest suite checks storage-sqlite and storage-pg alike.
STORAGE_CONTRACT_SO := $(BUILD)/tests/storage-pg/contract.so
$(STORAGE_CONTRACT_SO): plugins/storage-pg/tests/contract_plugin.c $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -o $@ $< $(PLUGIN_LDFLAGS) $(JANSSON_LIBS)
integration-tests: $(STORAGE_CONTRACT_SO)
