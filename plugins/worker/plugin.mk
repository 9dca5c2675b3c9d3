# worker: the horde bridge (pop, generate, upload, submit) and model files.
# libcurl for the remote horde and downloads, libcrypto for sha256, libwebp
# and libpng for images.
worker_LIBS      := $(shell pkg-config --libs libcurl libcrypto libwebp libpng 2>/dev/null) -lpthread
worker_CFLAGS    := $(shell pkg-config --cflags libcurl libcrypto libwebp libpng 2>/dev/null)
# the C unit tests link the parts that need no node
worker_TEST_SRCS := plugins/worker/models.c plugins/worker/http_client.c \
                    plugins/worker/image_codec.c
