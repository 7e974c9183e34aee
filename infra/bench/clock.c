/* The clock the cores reach under load, for the bench's peak rates: every core at once runs a
 * chain of dependent 64-bit multiplies, 3 cycles each on every x86 core since Intel's Core 2 and
 * AMD's Zen, so multiplies per second times 3 are cycles per second. A VM's /proc/cpuinfo shows
 * the nominal clock, not the turbo one. (A chain of `add $1` was used first; Intel's cores since
 * Golden Cove fold additions of an immediate in the renamer, and a Xeon read 23.5 GHz.) Prints the
 * mean GHz of the cores. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define MUL10 "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t" \
              "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t" "imul %1, %0\n\t"
#define ROUNDS 1000000L
#define LATENCY 3

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *measure(void *out) {
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        uint64_t x = 1, one = 1;
        double start = seconds();
        for (long i = 0; i < ROUNDS; i++) {
            __asm__ volatile(MUL10 MUL10 MUL10 MUL10 MUL10 MUL10 MUL10 MUL10 MUL10 MUL10
                             : "+r"(x) : "r"(one));
        }
        double ghz = ROUNDS * 100.0 * LATENCY / (seconds() - start) / 1e9;
        if (ghz > best) best = ghz;
    }
    *(double *)out = best;
    return NULL;
}

int main(int argc, char **argv) {
    int cores = argc > 1 ? atoi(argv[1]) : 1;
    if (cores < 1) cores = 1;
    pthread_t *threads = calloc(cores, sizeof *threads);
    double *ghz = calloc(cores, sizeof *ghz);
    for (int i = 0; i < cores; i++) pthread_create(&threads[i], NULL, measure, &ghz[i]);
    double sum = 0;
    for (int i = 0; i < cores; i++) {
        pthread_join(threads[i], NULL);
        sum += ghz[i];
    }
    printf("%.3f\n", sum / cores);
    return 0;
}
