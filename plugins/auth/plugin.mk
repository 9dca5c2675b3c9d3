# auth: users and API keys. The C tests link auth's parts that need no host
# (keys, users table, details, forms) and run the users table on the real
# SQLite store of storage-sqlite.
auth_LIBS      := -lcrypto -lpthread
auth_TEST_SRCS := plugins/auth/auth_keys.c plugins/auth/auth_users.c \
                  plugins/auth/auth_details.c plugins/auth/auth_form.c \
                  plugins/storage-sqlite/sqlite_store.c plugins/storage-sqlite/sqlite_conn.c \
                  plugins/storage-sqlite/sqlite_sync.c \
                  plugins/storage-sqlite/shared/storage_migrate.c plugins/storage-sqlite/shared/storage_pool.c
# only the test programs need SQLite itself (pattern-specific, not in auth.so)
$(BUILD)/tests/auth/%: private auth_LIBS += -lsqlite3
$(BUILD)/tests/auth/%: private auth_CFLAGS += -Iplugins/storage-sqlite
