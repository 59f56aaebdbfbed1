package herd;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

/**
 * A neighbour's connection to us, with its own thread (herd.py's PeerIn):
 * HELLO first, then its updates and PINGs; we answer WELCOME or REFUSED, then
 * PONGs. A catch-up (every position the neighbour knows, up to its first
 * PING) is logged as one summary line; live updates one line each.
 */
final class PeerIn extends PeerConn implements Runnable {
    private volatile Link link; // set by the HELLO
    private final long helloDeadline = System.nanoTime() + LINK_TIMEOUT_NS;

    // The catch-up being received; only the input side touches these.
    private boolean catchingUp;
    private long catchUpStart;
    private int catchUpPositions;
    private int catchUpNew;
    private long catchUpBytes;
    private long pings;

    PeerIn(Server server, SocketChannel channel, long id) throws IOException {
        super(server, id, channel);
    }

    @Override
    public void run() {
        String addr = "?";
        try {
            if (channel.getRemoteAddress() instanceof InetSocketAddress a) {
                addr = Server.show(a.getAddress(), a.getPort());
            }
        } catch (IOException e) {
            // the address is only for the log
        }
        server.log.event("peer-in #" + id + " " + addr + " connected");
        serve();
    }

    @Override
    String label() {
        Link l = link;
        return "peer-in " + (l != null ? l.name : "?") + "#" + id;
    }

    @Override
    String heartbeats() {
        return pings > 0 ? " (" + pings + " PINGs answered)" : "";
    }

    private static final Protocol.PeerLine PING_LINE = Protocol.PeerLine.of(Protocol.Kind.PING);
    private static final byte[] PONG = "PONG\n".getBytes(StandardCharsets.ISO_8859_1);

    /** A reply to the neighbour; one that never reads ours is dropped at the bound, like any peer. */
    private void answer(String line) {
        answer((line + "\n").getBytes(StandardCharsets.ISO_8859_1));
    }

    private void answer(byte[] bytes) {
        if (send(bytes)) {
            close("peer output backlog over its bound");
        }
    }

    @Override
    boolean lineReceived(String line) {
        // A heartbeat is the commonest line by far: no parsing for it.
        Protocol.PeerLine msg = line.equals("PING") ? PING_LINE : Protocol.parsePeerLine(line);
        Log log = server.log;
        boolean quiet = msg.kind() == Protocol.Kind.PING || (catchingUp && msg.kind() == Protocol.Kind.AT);
        if (!quiet) {
            log.event(label() + " < " + Protocol.esc(line));
        }
        if (msg.kind() == Protocol.Kind.BLANK) {
            return true;
        }
        Link l = link;
        if (l == null) {
            if (msg.kind() != Protocol.Kind.HELLO) {
                answer("REFUSED HELLO expected");
                close("no HELLO");
                return false;
            }
            l = server.linksByName.get(msg.text());
            if (l == null) {
                answer("REFUSED not a neighbour");
                close("refused HELLO from " + Protocol.esc(msg.text()) + ": not a neighbour");
                return false;
            }
            link = l;
            answer("WELCOME " + server.name);
            catchingUp = true;
            catchUpStart = System.nanoTime();
            l.greeted(this);
            return !isClosed();
        }
        switch (msg.kind()) {
            case AT -> {
                Protocol.Update u = msg.update();
                boolean isNew = server.store.update(u.client(), u.time(), u.atLine());
                if (catchingUp) {
                    catchUpPositions++;
                    catchUpBytes += line.length() + 1;
                    if (isNew) {
                        catchUpNew++;
                    }
                } else {
                    log.event("update from " + l.name + " " + (isNew ? "new" : "known") + ": "
                            + Protocol.esc(u.client()));
                }
                if (isNew) {
                    server.flood(u.atLine(), l);
                }
            }
            case PING -> {
                pings++;
                if (catchingUp) {
                    catchingUp = false; // the first PING ends the catch-up
                    log.event("link from " + l.name + ": catch-up of " + catchUpPositions + " positions received ("
                            + catchUpNew + " new, " + catchUpBytes + " bytes, in "
                            + millis(System.nanoTime() - catchUpStart) + " ms)");
                }
                answer(PONG);
            }
            default -> log.event(label() + ": invalid line ignored");
        }
        return !isClosed();
    }

    @Override
    void endOfInput() {
        String last = lines.finish();
        if (last != null && !isClosed()) {
            lineReceived(last);
        }
        close("closed by the neighbour");
    }

    @Override
    long tick(long now) {
        if (link == null) {
            if (now >= helloDeadline) {
                close("no HELLO in time");
            }
            return Math.max(1, (helloDeadline - now) / 1_000_000L);
        }
        if (now - lastHeard > SILENCE_NS) {
            close("silent too long");
        }
        return 1000;
    }

    @Override
    void closed(String why) {
        Link l = link;
        if (l != null && l.clearIncoming(this)) {
            server.log.event("link from " + l.name + ": down (" + why + ")");
        }
    }
}
