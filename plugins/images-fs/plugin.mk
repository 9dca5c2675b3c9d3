# images-fs: image files under the data dir and signed URLs. The C tests link
# the file and signature parts (no host needed).
images-fs_LIBS      := -lcrypto
images-fs_TEST_SRCS := plugins/images-fs/images_files.c plugins/images-fs/images_sign.c
