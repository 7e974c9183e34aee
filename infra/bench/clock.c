/* The clock the cores reach under load, for the bench's peak rates: every core at once runs a
 * chain of dependent integer adds (one cycle each on every x86 core made since 2006), so adds per
 * second are cycles per second. A VM's /proc/cpuinfo shows the nominal clock, not the turbo one.
 * Prints the mean GHz of the cores. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ADD10 "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t" \
              "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t" "add $1, %0\n\t"
#define ROUNDS 2000000L

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *measure(void *out) {
    double best = 0;
    for (int pass = 0; pass < 5; pass++) {
        uint64_t x = 0;
        double start = seconds();
        for (long i = 0; i < ROUNDS; i++) {
            __asm__ volatile(ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 ADD10 : "+r"(x));
        }
        double ghz = ROUNDS * 100.0 / (seconds() - start) / 1e9;
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
