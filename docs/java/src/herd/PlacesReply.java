package herd;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A Places answer turned into the reply's JSON (src/places/new_api.rs:
 * render_reply; herd.py's render_reply). Pure: bytes in, text out.
 */
final class PlacesReply {
    private PlacesReply() {}

    /**
     * The reply JSON, and what the log says: the number of results (ok) or
     * why there are none.
     */
    record Rendered(String json, boolean ok, int results, String why) {
        static Rendered results(String json, int n) {
            return new Rendered(json, true, n, null);
        }

        static Rendered failed(String json, String why) {
            return new Rendered(json, false, 0, why);
        }
    }

    static String errorJson(String message, String status) {
        LinkedHashMap<String, Json.Value> f = new LinkedHashMap<>();
        f.put("error_message", new Json.Str(message));
        f.put("html_attributions", new Json.Arr(List.of()));
        f.put("results", new Json.Arr(List.of()));
        f.put("status", new Json.Str(status));
        return Json.print(new Json.Obj(f));
    }

    /** Our own error reply: the message to the client, the detail only to the log. */
    static Rendered failure(String message, String detail) {
        return Rendered.failed(errorJson(message, "UNKNOWN_ERROR"),
                detail != null ? "UNKNOWN_ERROR: " + message + " (" + detail + ")" : "UNKNOWN_ERROR: " + message);
    }

    static Rendered render(String api, int status, byte[] body, int bound) {
        boolean httpOk = status >= 200 && status < 300;
        Json.Value parsed = null;
        String detail = null;
        try {
            String text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(body)).toString();
            parsed = Json.parse(text);
        } catch (CharacterCodingException e) {
            detail = "'utf-8' codec can't decode the body";
        } catch (Json.ParseError e) {
            detail = e.getMessage();
        }
        if (parsed instanceof Json.Obj o && o.get("error") instanceof Json.Obj error) {
            return googleError(error, status);
        }
        if (parsed instanceof Json.Obj o) {
            if (api.equals("legacy") && (httpOk || (o.text("status") != null && o.text("error_message") != null))) {
                return legacyReply(o, bound, status);
            }
            if (api.equals("new") && httpOk) {
                Json.Value places = o.get("places");
                if (places == null || places instanceof Json.Arr) {
                    return legacyReply(newToLegacy(o), bound, status);
                }
                return failure("Places answered HTTP " + status + " with places that are not a list", null);
            }
        }
        if (parsed != null && httpOk) {
            return failure("Places answered HTTP " + status + " with JSON that is not an object", null);
        }
        if (httpOk) {
            return failure("Places answered HTTP " + status + " with a body that is not JSON", detail);
        }
        return failure("Places answered HTTP " + status, null);
    }

    static Json.Obj newToLegacy(Json.Obj answer) {
        List<Json.Value> results = new ArrayList<>();
        if (answer.get("places") instanceof Json.Arr places) {
            for (Json.Value p : places.items()) {
                results.add(placeToResult(p));
            }
        }
        LinkedHashMap<String, Json.Value> f = new LinkedHashMap<>();
        f.put("html_attributions", new Json.Arr(List.of()));
        f.put("results", new Json.Arr(results));
        f.put("status", new Json.Str(results.isEmpty() ? "ZERO_RESULTS" : "OK"));
        return new Json.Obj(f);
    }

    /** One Places API (New) place as a legacy result, keys in the legacy order. */
    static Json.Value placeToResult(Json.Value value) {
        LinkedHashMap<String, Json.Value> result = new LinkedHashMap<>();
        if (!(value instanceof Json.Obj place)) {
            return new Json.Obj(result);
        }
        copy(place, "businessStatus", result, "business_status");
        if (place.get("location") instanceof Json.Obj loc) {
            LinkedHashMap<String, Json.Value> location = new LinkedHashMap<>();
            copy(loc, "latitude", location, "lat");
            copy(loc, "longitude", location, "lng");
            if (!location.isEmpty()) {
                LinkedHashMap<String, Json.Value> geometry = new LinkedHashMap<>();
                geometry.put("location", new Json.Obj(location));
                result.put("geometry", new Json.Obj(geometry));
            }
        }
        Json.Value display = place.get("displayName");
        if (display instanceof Json.Obj d) {
            copy(d, "text", result, "name");
        } else if (display instanceof Json.Str) {
            result.put("name", display);
        }
        copy(place, "id", result, "place_id");
        copy(place, "rating", result, "rating");
        copy(place, "types", result, "types");
        copy(place, "userRatingCount", result, "user_ratings_total");
        for (String from : new String[] {"shortFormattedAddress", "formattedAddress"}) {
            if (place.fields().containsKey(from)) {
                result.put("vicinity", place.get(from));
                break;
            }
        }
        return new Json.Obj(result);
    }

    private static void copy(Json.Obj from, String key, Map<String, Json.Value> to, String as) {
        if (from.fields().containsKey(key)) {
            to.put(as, from.get(key));
        }
    }

    static Rendered legacyReply(Json.Obj answer, int bound, int http) {
        int sent = 0;
        if (answer.get("results") instanceof Json.Arr results) {
            List<Json.Value> items = results.items();
            List<Json.Value> kept = new ArrayList<>(items.subList(0, Math.min(bound, items.size())));
            answer.fields().put("results", new Json.Arr(kept)); // same key: keeps its place
            sent = kept.size();
        }
        String json = Json.print(answer);
        String status = answer.text("status");
        if ("OK".equals(status) || "ZERO_RESULTS".equals(status)) {
            return Rendered.results(json, sent);
        }
        if (status != null) {
            String message = answer.text("error_message");
            return Rendered.failed(json, message != null ? status + ": " + message + " (HTTP " + http + ")"
                    : status + " (HTTP " + http + ")");
        }
        return Rendered.failed(json, "Places answered HTTP " + http + " without a status");
    }

    /** {"error": {"code", "message", "status"}} as a legacy error reply. */
    static Rendered googleError(Json.Obj error, int http) {
        String googleStatus = error.text("status") != null ? error.text("status") : "";
        String legacyStatus = switch (googleStatus) {
            case "PERMISSION_DENIED", "UNAUTHENTICATED" -> "REQUEST_DENIED";
            case "INVALID_ARGUMENT" -> "INVALID_REQUEST";
            case "RESOURCE_EXHAUSTED" -> "OVER_QUERY_LIMIT";
            default -> "UNKNOWN_ERROR";
        };
        String message = error.text("message");
        if (message == null) {
            message = "Places answered HTTP " + http;
        }
        return Rendered.failed(errorJson(message, legacyStatus), legacyStatus + ": " + message + " (HTTP " + http
                + ", " + (googleStatus.isEmpty() ? "no status" : googleStatus) + ")");
    }
}
