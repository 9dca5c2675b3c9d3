# images-fs: image files under the data dir and signed URLs. The provider,
# the signed URLs and their routes are images-fs/shared, shared with images-db. The
# C tests link the file and secret parts and images-fs/shared's rules (no host
# needed).
images-fs_SRCS      := $(wildcard plugins/images-fs/*.c) plugins/images-fs/shared/images_url.c \
                       plugins/images-fs/shared/images_provider.c plugins/images-fs/shared/images_routes.c
images-fs_LIBS      := -lcrypto
images-fs_TEST_SRCS := plugins/images-fs/images_files.c plugins/images-fs/images_sign.c \
                       plugins/images-fs/shared/images_url.c
