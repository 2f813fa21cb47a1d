/* A main for a harness built without libFuzzer: runs LLVMFuzzerTestOneInput
 * once on each file given (a folder: on each file in it, in name order),
 * so the seed corpus and the regression inputs can be replayed by the
 * specs with plain ASan + UBSan. A broken invariant aborts, as in the
 * fuzzer. Prints "N inputs" on success. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned long count;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    size_t cap = 4096, len = 0, k;
    uint8_t *data = malloc(cap);
    while (data && (k = fread(data + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap)
            data = realloc(data, cap *= 2);
    }
    fclose(f);
    if (!data) {
        fputs("out of memory\n", stderr);
        exit(2);
    }
    /* Exactly len bytes, as libFuzzer hands them over, so that ASan sees a
     * read one past the end. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact)
        exit(2);
    memcpy(exact, data, len);
    free(data);
    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "running %s (%zu bytes)\n", path, len);
    LLVMFuzzerTestOneInput(exact, len);
    free(exact);
    count++;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *d = opendir(path);
    if (!d) {
        perror(path);
        exit(2);
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        if (!names || !(names[n] = malloc(strlen(path) + strlen(e->d_name) + 2)))
            exit(2);
        sprintf(names[n++], "%s/%s", path, e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        run_path(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++)
        run_path(argv[i]);
    printf("%lu inputs\n", count);
    return 0;
}
