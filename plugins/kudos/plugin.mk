# kudos: the kudos economy; the model reference parser is broker/shared/modelref
# (shared with the broker). The C tests link the pure parts (price, rules,
# model reference) and the ledger with its operations, run on the real SQLite
# store of storage-sqlite next to auth's users table (the opening balances).
kudos_SRCS      := $(wildcard plugins/kudos/*.c) plugins/broker/shared/modelref.c
kudos_LIBS      := -lpthread -lm
kudos_TEST_SRCS := plugins/kudos/price.c plugins/kudos/rules.c plugins/kudos/models.c \
                   plugins/broker/shared/modelref.c \
                   plugins/kudos/ledger.c plugins/kudos/ops.c plugins/kudos/map.c \
                   plugins/storage-sqlite/sqlite_store.c plugins/storage-sqlite/sqlite_conn.c \
                   plugins/storage-sqlite/sqlite_sync.c \
                  plugins/storage-sqlite/shared/storage_migrate.c plugins/storage-sqlite/shared/storage_pool.c \
                   plugins/auth/auth_keys.c plugins/auth/auth_users.c
# only the test programs need SQLite and libcrypto (auth's key hashing)
$(BUILD)/tests/kudos/%: private kudos_LIBS += -lsqlite3 -lcrypto
$(BUILD)/tests/kudos/%: private kudos_CFLAGS += -Iplugins/storage-sqlite -Iplugins/auth
