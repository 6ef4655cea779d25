%% A STAND-IN for the original flack's chat_stream, defined by the tests
%% that run without the original (tests/compat_app.rs): the same four
%% exports, answers that say they came from the stand-in, and hold/1,
%% which keeps the calling process inside this module's code until it is
%% told to go, the case where a careless code swap would kill it.
%% Compiled with -DDIFFERENT it is other code with the same API; with
%% -DNO_LEAVE it lacks leave/2. The tests build it under the name
%% chat_stream (its -module line rewritten), as flack nodes have it.
-module(stand_in_stream).

-ifdef(NO_LEAVE).
-export([register_user/2, join/3, post/1, hold/1]).
-else.
-export([register_user/2, join/3, post/1, leave/2, hold/1]).
leave(Chat, UserId) -> {stand_in, leave, Chat, UserId}.
-endif.

register_user(UserName, UserId) -> {stand_in, register_user, UserName, UserId}.
join(Chat, UserName, UserId) -> {stand_in, join, Chat, UserName, UserId}.
-ifdef(DIFFERENT).
post(Message) -> {stand_in_variant, post, Message}.
-else.
post(Message) -> {stand_in, post, Message}.
-endif.

%% Tells Parent it is inside, then waits here for `go`.
hold(Parent) ->
    Parent ! {holding, self()},
    receive
        go -> done
    end.
