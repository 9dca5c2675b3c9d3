# images-fs: image files under the data dir and signed URLs. The provider,
# the signed URLs and their routes are lib/images, shared with images-db. The
# C tests link the file and secret parts and lib/images' rules (no host
# needed).
images-fs_SRCS      := $(wildcard plugins/images-fs/*.c) lib/images/images_url.c \
                       lib/images/images_provider.c lib/images/images_routes.c
images-fs_LIBS      := -lcrypto
images-fs_TEST_SRCS := plugins/images-fs/images_files.c plugins/images-fs/images_sign.c \
                       lib/images/images_url.c
