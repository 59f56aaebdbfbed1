package herd;

import java.util.concurrent.CompletableFuture;
import sun.misc.Signal;

/**
 * SIGINT and SIGTERM stop the server cleanly (the log is written out first,
 * and the exit status is 0); SIGHUP reopens the log. The Java SE API only
 * offers shutdown hooks, which cannot tell which signal came and leave the
 * JVM to exit with 128 + the signal; sun.misc.Signal (module jdk.unsupported,
 * in every JDK) can, and it is what the JDK's own tools use.
 */
final class Signals {
    private Signals() {}

    static void install(CompletableFuture<String> stop, Log log) {
        Signal.handle(new Signal("INT"), s -> stop.complete("SIGINT"));
        Signal.handle(new Signal("TERM"), s -> stop.complete("SIGTERM"));
        Signal.handle(new Signal("HUP"), s -> log.reopen());
    }
}
