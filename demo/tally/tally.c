/* tally: count lines, words and bytes of its input, with per-site defaults.
 *
 * The demo product of releng. Reads /etc/tally.conf (or $TALLY_CONF) for the
 * default count ("mode = lines|words|bytes|all"); options override it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TALLY_VERSION
#define TALLY_VERSION "unknown"
#endif
#ifndef TALLY_CONF
#define TALLY_CONF "/etc/tally.conf"
#endif

enum mode { MODE_ALL, MODE_LINES, MODE_WORDS, MODE_BYTES };

static enum mode parse_mode(const char *s, int *ok) {
    *ok = 1;
    if (strcmp(s, "all") == 0) return MODE_ALL;
    if (strcmp(s, "lines") == 0) return MODE_LINES;
    if (strcmp(s, "words") == 0) return MODE_WORDS;
    if (strcmp(s, "bytes") == 0) return MODE_BYTES;
    *ok = 0;
    return MODE_ALL;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

/* Returns the configured mode, or MODE_ALL when the file is absent. */
static enum mode read_config(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return MODE_ALL;
    char line[256];
    enum mode mode = MODE_ALL;
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = '\0';
        if (strcmp(trim(line), "mode") == 0) {
            int ok;
            enum mode m = parse_mode(trim(eq + 1), &ok);
            if (ok) mode = m;
            else fprintf(stderr, "tally: %s: ignoring unknown mode '%s'\n", path, trim(eq + 1));
        }
    }
    fclose(f);
    return mode;
}

struct counts { unsigned long lines, words, bytes; };

static void count(FILE *in, struct counts *c) {
    int ch, in_word = 0;
    while ((ch = getc(in)) != EOF) {
        c->bytes++;
        if (ch == '\n') c->lines++;
        if (isspace(ch)) in_word = 0;
        else if (!in_word) { in_word = 1; c->words++; }
    }
}

static void usage(FILE *out) {
    fputs("usage: tally [-l|-w|-c] [--version] [FILE...]\n"
          "Count lines (-l), words (-w) or bytes (-c) of FILEs or standard input.\n"
          "The default comes from " TALLY_CONF " (mode = lines|words|bytes|all).\n", out);
}

int main(int argc, char **argv) {
    const char *conf = getenv("TALLY_CONF");
    enum mode mode = read_config(conf ? conf : TALLY_CONF);
    int first = 1;
    for (; first < argc && argv[first][0] == '-' && argv[first][1]; first++) {
        const char *a = argv[first];
        if (strcmp(a, "--") == 0) { first++; break; }
        if (strcmp(a, "--version") == 0) { printf("tally %s\n", TALLY_VERSION); return 0; }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(stdout); return 0; }
        if (strcmp(a, "-l") == 0) mode = MODE_LINES;
        else if (strcmp(a, "-w") == 0) mode = MODE_WORDS;
        else if (strcmp(a, "-c") == 0) mode = MODE_BYTES;
        else { fprintf(stderr, "tally: unknown option '%s'\n", a); usage(stderr); return 2; }
    }
    struct counts total = {0, 0, 0};
    int status = 0;
    if (first == argc) {
        count(stdin, &total);
    } else {
        for (int i = first; i < argc; i++) {
            FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
            if (!f) { fprintf(stderr, "tally: %s: %s\n", argv[i], strerror(errno)); status = 1; continue; }
            count(f, &total);
            if (f != stdin) fclose(f);
        }
    }
    switch (mode) {
    case MODE_LINES: printf("%lu\n", total.lines); break;
    case MODE_WORDS: printf("%lu\n", total.words); break;
    case MODE_BYTES: printf("%lu\n", total.bytes); break;
    default: printf("%lu %lu %lu\n", total.lines, total.words, total.bytes); break;
    }
    return status;
}
