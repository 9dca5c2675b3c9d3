# ratings: the aesthetic ratings service (API v1, pool, trust, kudos, export,
# rating page). libcrypto for the salted rater hashes of exports.
ratings_LIBS := -lcrypto -lm
# the rating page is compiled in (page.c .incbin's page.html)
$(BUILD)/obj/plugins/ratings/page.o: plugins/ratings/page.html
