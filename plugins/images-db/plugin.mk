# images-db: images kept in the storage provider's database, signed URLs. The
# provider, the signed URLs and their routes are lib/images, shared with
# images-fs. The C tests link the pure part (keys, signatures, content types).
images-db_SRCS      := $(wildcard plugins/images-db/*.c) lib/images/images_url.c \
                       lib/images/images_provider.c lib/images/images_routes.c
images-db_LIBS      := -lcrypto
images-db_TEST_SRCS := lib/images/images_url.c
