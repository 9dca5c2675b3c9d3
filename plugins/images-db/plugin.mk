# images-db: images kept in the storage provider's database, signed URLs. The
# provider, the signed URLs and their routes are images-fs/shared, shared with
# images-fs. The C tests link the pure part (keys, signatures, content types).
images-db_SRCS      := $(wildcard plugins/images-db/*.c) plugins/images-fs/shared/images_url.c \
                       plugins/images-fs/shared/images_provider.c plugins/images-fs/shared/images_routes.c
images-db_LIBS      := -lcrypto
images-db_TEST_SRCS := plugins/images-fs/shared/images_url.c
