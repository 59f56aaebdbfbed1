package herd;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Client ID -> its newest position (src/herd/store.rs). Newest client time
 * wins; equal times: the greater AT line, compared as bytes, wins; an equal
 * line is not new. Every server applies this rule, so all agree and floods
 * end. One lock around a HashMap: every operation is a few map steps, so the
 * lock is held for well under a microsecond and a finer scheme buys nothing.
 */
final class Store {
    record Position(Protocol.ClientTime time, String atLine) {}

    private final Map<String, Position> positions = new HashMap<>();

    /** Stores the position if it is newer than the one known; true if it was. */
    synchronized boolean update(String client, Protocol.ClientTime time, String atLine) {
        Position known = positions.get(client);
        if (known != null) {
            int c = time.compareTo(known.time());
            // Latin-1 strings compare char by char, i.e. as unsigned bytes.
            if (c < 0 || (c == 0 && atLine.compareTo(known.atLine()) <= 0)) {
                return false;
            }
        }
        positions.put(client, new Position(time, atLine));
        return true;
    }

    synchronized Position get(String client) {
        return positions.get(client);
    }

    /** Every AT line known, for the catch-up. */
    synchronized List<String> atLines() {
        List<String> out = new ArrayList<>(positions.size());
        for (Position p : positions.values()) {
            out.add(p.atLine());
        }
        return out;
    }
}
