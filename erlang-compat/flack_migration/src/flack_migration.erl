%% What an operator asks a node running flack_migration (by rpc, or from
%% bin/flack-migration status).
-module(flack_migration).

-export([status/0]).

%% [{installed, Bool}, {chat_stream, File}, {counters_owned, N}, {chats_seen, N}]
-spec status() -> [{atom(), term()}].
status() ->
    Owned = case whereis(flack_migration_seq) of
                undefined -> 0;
                Seq -> length(ets:select(gproc, [{{{{c, g, {flack_seq, '_'}}, Seq}, '_', '_'},
                                                  [], [true]}]))
            end,
    Seen = case ets:info(flack_migration_last, size) of
               undefined -> 0;
               Size -> Size
           end,
    File = case code:is_loaded(chat_stream) of
               {file, F} -> F;
               false -> not_loaded
           end,
    [{installed, flack_migration_code:installed()},
     {chat_stream, File},
     {counters_owned, Owned},
     {chats_seen, Seen}].
