# images-db: images kept in the storage provider's database, signed URLs. The
# C tests link the pure part (keys, signatures, content types).
images-db_LIBS      := -lcrypto
images-db_TEST_SRCS := plugins/images-db/images_url.c
