/* The transfer floor: fetch a list of pages with libcurl multi, keep-alive,
 * a fixed number of transfers in flight, and discard the bodies (libcurl
 * still decodes gzip, as gitfleet's transport asks for it too). What is left
 * of a client's time above this is parsing, its own bookkeeping and output.
 *
 *   floor_transfer [--save DIR] CONCURRENCY URLS_FILE
 *
 * URLS_FILE has one page per line: "TOKEN URL". Every page must answer 200;
 * the program prints "pages=N bytes=B failed=F" and exits 1 if any failed.
 * With --save DIR each decoded body is also written to DIR/NNNNNN.json (the
 * parse floor reads them back); that mode is not timed.
 *
 * Built by bench/run.py:  cc -O2 -o floor_transfer floor_transfer.c $(pkg-config --cflags --libs libcurl)
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct page {
    char *token;
    char *url;
};

struct slot {
    CURL *easy;
    struct curl_slist *headers;
    FILE *save;
    size_t index;
};

static size_t total_bytes;

static size_t on_body(char *data, size_t size, size_t n, void *userp)
{
    struct slot *s = userp;
    total_bytes += size * n;
    if (s->save && fwrite(data, size, n, s->save) != n)
        return 0;
    return size * n;
}

static int read_pages(const char *path, struct page **out, size_t *count)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1024, n = 0;
    struct page *pages = malloc(cap * sizeof *pages);
    char *line = NULL;
    size_t len = 0;
    while (pages && getline(&line, &len, f) > 0) {
        line[strcspn(line, "\r\n")] = '\0';
        char *sp = strchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        if (n == cap) {
            cap *= 2;
            struct page *grown = realloc(pages, cap * sizeof *pages);
            if (!grown)
                break;
            pages = grown;
        }
        pages[n].token = strdup(line);
        pages[n].url = strdup(sp + 1);
        n++;
    }
    free(line);
    fclose(f);
    *out = pages;
    *count = n;
    return pages ? 0 : -1;
}

static void start(CURLM *multi, struct slot *s, struct page *p, size_t index, const char *save_dir)
{
    char auth[512];
    curl_slist_free_all(s->headers);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", p->token);
    s->headers = curl_slist_append(NULL, auth);
    s->headers = curl_slist_append(s->headers, "Accept: application/vnd.github+json");
    s->index = index;
    s->save = NULL;
    if (save_dir) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%06zu.json", save_dir, index);
        s->save = fopen(path, "wb");
    }
    curl_easy_setopt(s->easy, CURLOPT_URL, p->url);
    curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(s->easy, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(s->easy, CURLOPT_USERAGENT, "gitfleet-bench-floor");
    curl_easy_setopt(s->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(s->easy, CURLOPT_PRIVATE, s);
    curl_easy_setopt(s->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(s->easy, CURLOPT_TIMEOUT, 120L);
    curl_multi_add_handle(multi, s->easy);
}

int main(int argc, char **argv)
{
    const char *save_dir = NULL;
    int a = 1;
    if (argc > 2 && strcmp(argv[1], "--save") == 0) {
        save_dir = argv[2];
        a = 3;
    }
    if (argc - a != 2) {
        fprintf(stderr, "usage: floor_transfer [--save DIR] CONCURRENCY URLS_FILE\n");
        return 2;
    }
    long concurrency = strtol(argv[a], NULL, 10);
    struct page *pages;
    size_t count;
    if (concurrency < 1 || read_pages(argv[a + 1], &pages, &count) != 0)
        return 2;
    if ((size_t)concurrency > count)
        concurrency = count ? (long)count : 1;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, concurrency);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, concurrency);
    struct slot *slots = calloc((size_t)concurrency, sizeof *slots);
    size_t next = 0, done = 0, failed = 0;
    for (long i = 0; i < concurrency && next < count; i++) {
        slots[i].easy = curl_easy_init();
        start(multi, &slots[i], &pages[next], next, save_dir);
        next++;
    }
    while (done < count) {
        int running = 0;
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            break;
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct slot *s;
            long status = 0;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (msg->data.result != CURLE_OK || status != 200) {
                failed++;
                fprintf(stderr, "floor_transfer: %s: %s (HTTP %ld)\n", pages[s->index].url,
                        curl_easy_strerror(msg->data.result), status);
            }
            if (s->save)
                fclose(s->save);
            curl_multi_remove_handle(multi, s->easy);
            done++;
            if (next < count) {
                start(multi, s, &pages[next], next, save_dir);
                next++;
            }
        }
        if (done < count && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
            break;
    }
    printf("pages=%zu bytes=%zu failed=%zu\n", done, total_bytes, failed + (count - done));
    for (long i = 0; i < concurrency; i++) {
        if (slots[i].easy)
            curl_easy_cleanup(slots[i].easy);
        curl_slist_free_all(slots[i].headers);
    }
    for (size_t i = 0; i < count; i++) {
        free(pages[i].token);
        free(pages[i].url);
    }
    free(pages);
    free(slots);
    curl_multi_cleanup(multi);
    curl_global_cleanup();
    return failed || done < count ? 1 : 0;
}
