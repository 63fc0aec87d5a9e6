/* Sandbox ("pause") process for pods: holds the pod's namespaces open and sleeps until it
 * is told to stop. As PID 1 in the pod it also reaps zombies. Built with `gcc -static`. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && argv[1][0] == '-' && argv[1][1] == 'v') {
        puts("mlmodel-pause 0.1");
        return 0;
    }
    struct sigaction term = {.sa_handler = on_term};
    struct sigaction chld = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGCHLD, &chld, NULL);
    for (;;) pause();
}
